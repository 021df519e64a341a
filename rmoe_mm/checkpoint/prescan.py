"""A dry run of a checkpoint's pickle that checks it before torch loads it.

torch's ``weights_only`` unpickler decides which globals a pickle may call,
but once ``numpy.dtype`` is allowed it hands the dtype whatever state the
pickle carries, and numpy trusts that state (field offsets, item sizes, the
flag that says "these bytes are object pointers"). So before the real load,
:func:`prescan` unpickles the file's pickle with stand-ins: nothing real is
called, every global is looked up in the allow-list, and the numpy globals
become recorders that accept only plain numeric dtypes (bool, int, uint,
float, complex; no structured, object, void, string or subarray dtypes, no
odd sizes or flags) and arrays and scalars whose byte counts fit them.
Anything else raises :class:`CheckpointGlobalRefused` naming the global.
"""
import io
import pickle
import re
from typing import BinaryIO, Callable, Dict, Optional

import numpy as np

from .allowlist import (NUMERIC_KINDS, NUMPY_HELPER_MODULES,
                        history_buffer_statistics)

#: The highest ndim numpy accepts (NPY_MAXDIMS of numpy 2; numpy 1 had 32).
MAX_NDIM = 64
#: What the dtype state of a plain numeric dtype looks like after its
#: version and byte order: no subarray, names or fields, default item size
#: and alignment, no flags (numpy's own pickles always write exactly this).
PLAIN_DTYPE_STATE = (None, None, None, -1, -1, 0)
BYTE_ORDERS = ('<', '>', '|', '=')
TEXT_CODECS = ('latin1', 'latin-1', 'utf-8', 'utf8', 'ascii')
HISTORY_BUFFER = 'mmengine.logging.history_buffer.HistoryBuffer'

#: Refusals of a whole file format rather than of a global.
LEGACY_TAR = 'a file in the legacy tar format (torch < 0.4)'
NO_DATA_PKL = 'a zip archive without data.pkl'
UNCHECKABLE = (LEGACY_TAR, NO_DATA_PKL)


class CheckpointGlobalRefused(pickle.UnpicklingError):
    """A checkpoint asked for a global, or a numpy object, outside the rules.

    Attributes:
        refused: the global (``'os.system'``) or numpy object refused.
        reason: why, in a few words.
        filename: the file or URL, once known.
    """

    def __init__(self, refused: str, reason: str = '', filename: str = ''):
        self.refused, self.reason, self.filename = refused, reason, filename
        super().__init__(self._message())

    def _message(self) -> str:
        where = f'Refused to load {self.filename!r}: it' if self.filename \
            else 'The checkpoint'
        reason = f' ({self.reason})' if self.reason else ''
        if self.refused in UNCHECKABLE:
            what = (f'{where} is {self.refused}{reason}, which the safe '
                    'loader cannot check (docs/security.md).')
        else:
            what = (
                f'{where} asks the unpickler for {self.refused}{reason}, '
                'which is not on the allow-list of what model and mmengine '
                'checkpoints contain (tensors, containers, HistoryBuffer, '
                'plain numeric numpy arrays, scalars and dtypes; '
                'docs/security.md). Unpickling an arbitrary global can '
                'execute code, so torch >= 2.6 loads with weights_only=True.')
        return (f'{what} Only if you trust this file, name it in '
                'RMOE_MM_TRUSTED_CHECKPOINTS or pass --trust-checkpoint to '
                'the tools.')

    def with_filename(self, filename: str) -> 'CheckpointGlobalRefused':
        """The same refusal, naming ``filename``."""
        return CheckpointGlobalRefused(self.refused, self.reason, filename)


def _refuse(refused: str, reason: str) -> CheckpointGlobalRefused:
    return CheckpointGlobalRefused(refused, reason)


class _Stub:
    """Stand-in for an allowed non-numpy global: takes any call and state."""

    global_name = ''

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __repr__(self):
        return f'<{self.global_name or "object"}>'

    def __setitem__(self, key, value):
        pass

    def append(self, item):
        pass

    def extend(self, items):
        pass

    def add(self, item):
        pass


# ---------------------------------------------------------------- numpy
class _DType:
    """What ``numpy.dtype(typestr, align, copy)`` would build, checked."""

    def __init__(self, *args):
        name = 'numpy.dtype'
        if not 1 <= len(args) <= 3 or not isinstance(args[0], str) or \
                not all(isinstance(a, bool) for a in args[1:]):
            raise _refuse(name, f'with arguments {_short(args)}')
        typestr = args[0]
        if not re.fullmatch(r'[biufc]\d{1,2}', typestr):
            raise _refuse(
                name, f'of type {typestr!r}: only bool, int, uint, '
                'float and complex dtypes are allowed')
        try:
            dtype = np.dtype(typestr)  # a short numeric code: safe to parse
        except TypeError as err:
            raise _refuse(name, f'of unknown type {typestr!r}') from err
        if dtype.kind not in NUMERIC_KINDS or dtype.fields is not None or \
                dtype.subdtype is not None or \
                dtype.itemsize != int(typestr[1:]):
            raise _refuse(name, f'of type {typestr!r}')
        self.itemsize, self.typestr = dtype.itemsize, typestr

    def __repr__(self):
        return f'dtype({self.typestr!r})'

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (8, 9) or \
                state[0] not in (3, 4) or state[1] not in BYTE_ORDERS or \
                tuple(state[2:8]) != PLAIN_DTYPE_STATE or \
                (len(state) == 9 and state[8] is not None):
            raise _refuse(
                'numpy.dtype', f'with state {_short(state)}: a plain numeric '
                "dtype's state is (3, byte order, None, None, None, -1, -1, "
                '0); fields, subarrays, sizes, offsets and flags are refused')


class _ArrayClass:
    """``numpy.ndarray``: allowed only as ``_reconstruct``'s first argument."""

    def __new__(cls, *args, **kwargs):
        raise _refuse(
            'numpy.ndarray', 'called directly: arrays are rebuilt '
            'only through _reconstruct')


class _Array:
    """What ``_reconstruct(ndarray, shape, typecode)`` would build, checked."""

    def __init__(self, subtype, shape, typecode):
        name = 'numpy.core.multiarray._reconstruct'
        if subtype is not _ArrayClass:
            raise _refuse(name, f'of {_short(subtype)}: only numpy.ndarray')
        if not _is_shape(shape) or not isinstance(typecode, bytes):
            raise _refuse(name, f'with arguments {_short((shape, typecode))}')

    def __setstate__(self, state):
        name = 'numpy.ndarray'
        if isinstance(state, tuple) and len(state) == 5:
            version, *state = state
            if version != 1:
                raise _refuse(name, f'with state version {_short(version)}')
        if not isinstance(state, (tuple, list)) or len(state) != 4:
            raise _refuse(name, f'with state {_short(state)}')
        shape, dtype, is_fortran, data = state
        if not _is_shape(shape) or not isinstance(dtype, _DType) or \
                not isinstance(is_fortran, bool):
            raise _refuse(
                name, f'with state {_short(state)}: only plain '
                'numeric arrays are allowed')
        if not isinstance(data, bytes):
            raise _refuse(
                name, f'with data of type {type(data).__name__}: '
                'only raw bytes of a numeric array are allowed')
        size = dtype.itemsize
        for dim in shape:
            size *= dim
        if len(data) != size:
            raise _refuse(
                name, f'of shape {tuple(shape)} and item size '
                f'{dtype.itemsize} with {len(data)} bytes of data')


def _scalar(dtype, data=None):
    name = 'numpy.core.multiarray.scalar'
    if not isinstance(dtype, _DType):
        raise _refuse(name, f'of {_short(dtype)}: only numeric dtypes')
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise _refuse(
            name, f'with {_short(data)} for an item of '
            f'{dtype.itemsize} bytes')
    return _Stub()


def _is_shape(shape) -> bool:
    return isinstance(shape, tuple) and len(shape) <= MAX_NDIM and all(
        type(dim) is int and dim >= 0 for dim in shape)


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + '...'


# ---------------------------------------------------------------- others
def _encode(text, encoding='utf-8', errors='strict'):
    """``_codecs.encode``: how protocol-2 pickles spell ``bytes``."""
    if not isinstance(text, str) or encoding not in TEXT_CODECS or \
            errors != 'strict':
        raise _refuse('_codecs.encode',
                      f'with arguments {_short((text, encoding, errors))}')
    return text.encode(encoding)


def _bytes(*args):
    """``bytes()``: how protocol-2 pickles spell ``b''`` (an empty array's
    data); any argument (``bytes(10**12)``) is refused."""
    if args:
        raise _refuse(
            'builtins.bytes', f'with arguments {_short(args)}: '
            'only bytes() (empty) is allowed')
    return b''


class _HistoryBuffer(_Stub):
    global_name = HISTORY_BUFFER


def _getattr(owner, name, *default):
    if owner is _HistoryBuffer and not default and \
            name in history_buffer_statistics():
        return _Stub()
    what = 'HistoryBuffer' if owner is _HistoryBuffer else _short(owner)
    raise _refuse(
        'builtins.getattr', f'for getattr({what}, {_short(name)}): '
        'only HistoryBuffer statistics methods may be looked up')


def _special_globals() -> Dict[str, Callable]:
    special = {
        'numpy.dtype': _DType,
        'numpy.ndarray': _ArrayClass,
        '_codecs.encode': _encode,
        'builtins.bytes': _bytes,
        'builtins.getattr': _getattr,
        HISTORY_BUFFER: _HistoryBuffer,
    }
    for module in NUMPY_HELPER_MODULES:
        special[f'{module}._reconstruct'] = _Array
        special[f'{module}.scalar'] = _scalar
    return special


def _torch_allowed_names() -> Optional[set]:
    """torch's ``weights_only`` allow-list (built-in + user-added), by name."""
    try:
        from torch import _weights_only_unpickler as wou
        return set(wou._get_allowed_globals()) | set(
            wou._get_user_allowed_globals())
    except (ImportError, AttributeError):  # pragma: no cover - other torch
        return None


class PrescanUnpickler(pickle.Unpickler):
    """Unpickles with stand-ins only; refuses what is not allowed."""

    def __init__(self, file, torch_allowed: Optional[set]):
        super().__init__(file, encoding='bytes')
        self._special = _special_globals()
        self._torch_allowed = torch_allowed
        self._stubs: Dict[str, type] = {}

    def find_class(self, module: str, name: str):
        compat = pickle._compat_pickle  # Python 2 names, as torch maps them
        if (module, name) in compat.NAME_MAPPING:
            module, name = compat.NAME_MAPPING[(module, name)]
        elif module in compat.IMPORT_MAPPING:
            module = compat.IMPORT_MAPPING[module]
        full = f'{module}.{name}'
        if full in self._special:
            return self._special[full]
        if self._torch_allowed is None or full in self._torch_allowed:
            if full not in self._stubs:
                self._stubs[full] = type('Stub', (_Stub, ),
                                         {'global_name': full})
            return self._stubs[full]
        raise _refuse(f'GLOBAL {full}', '')

    def persistent_load(self, pid):
        return _Stub()


def _scan_pickle(data: BinaryIO, torch_allowed) -> None:
    try:
        PrescanUnpickler(data, torch_allowed).load()
    except CheckpointGlobalRefused:
        raise
    except Exception as err:  # malformed; torch.load would fail as well
        raise pickle.UnpicklingError(
            f'not a readable torch.save pickle: {type(err).__name__}: '
            f'{_short(str(err), 200)}') from err


def prescan(file: BinaryIO) -> None:
    """Check the pickle(s) of a ``torch.save`` file; leave the file position.

    Args:
        file: the open checkpoint, binary, seekable, at its start.

    Raises:
        CheckpointGlobalRefused: a global outside the allow-list, a numpy
            object outside the rules, or a format that cannot be checked.
    """
    from torch.serialization import _is_zipfile, _open_zipfile_reader
    start = file.tell()
    torch_allowed = _torch_allowed_names()
    try:
        if _is_zipfile(file):
            # The same reader torch.load uses, so both see the same record.
            with _open_zipfile_reader(file) as archive:
                if not archive.has_record('data.pkl'):
                    raise _refuse(NO_DATA_PKL, 'not a torch.save file')
                _scan_pickle(
                    io.BytesIO(archive.get_record('data.pkl')), torch_allowed)
            return
        if _is_tar(file, start):
            raise _refuse(LEGACY_TAR, 're-save it with a current torch')
        file.seek(start)
        # Legacy format: magic number, protocol, sys info, then the objects.
        for _ in range(4):
            _scan_pickle(file, torch_allowed)
    finally:
        file.seek(start)


def _is_tar(file: BinaryIO, start: int) -> bool:
    file.seek(start + 257)
    return file.read(5) == b'ustar'
