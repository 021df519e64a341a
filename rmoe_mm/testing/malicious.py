"""Hostile checkpoints: what a stranger's ``.pth`` may try.

Each payload writes a ``torch.save`` file whose pickle, unpickled fully,
would run code (the command touches a marker file) or hand numpy a dtype,
array or scalar state it would trust (object pointers over raw bytes, a
field at offset 2**40, a refcount flag on a float). ``PAYLOADS`` maps a name
to ``(write(path, marker), refused)``, where ``refused`` is a text the
refusal must contain: the global or numpy object that was refused.
"""
import io
import os
import subprocess
import warnings
import zipfile
from typing import Callable, Dict, Tuple

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

try:
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct, scalar


class Reduce:
    """Pickles as ``func(*args)`` (then ``BUILD`` with ``state``, if any)."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        if self.state is None:
            return self.func, self.args
        return self.func, self.args, self.state


def _save(obj, path, protocol=2):
    torch.save({
        'state_dict': {
            'w': torch.ones(2)
        },
        'meta': {
            'x': obj
        }
    },
               path,
               pickle_protocol=protocol)


def code(func, make_args, protocol=2):
    """A payload calling ``func(*make_args(marker))``."""

    def write(path, marker):
        _save(Reduce(func, make_args(marker)), path, protocol)

    return write


def numpy_state(func, args, state):

    def write(path, marker):
        _save(Reduce(func, args, state), path)

    return write


def plain(obj):

    def write(path, marker):
        _save(obj, path)

    return write


def _matrix():
    with warnings.catch_warnings():  # np.matrix is pending deprecation
        warnings.simplefilter('ignore')
        return np.matrix([[1.]])


def _shell(marker):
    return f'touch {marker}'


_F8 = np.dtype('f8')
Payload = Tuple[Callable[[str, str], None], str]

#: Payloads that run a command when unpickled fully (the marker appears).
CODE_PAYLOADS: Dict[str, Payload] = {
    'os.system': (code(os.system, lambda m: (_shell(m), )), 'system'),
    'eval':
    (code(eval, lambda m:
          (f"__import__('os').system({_shell(m)!r})", )), 'builtins.eval'),
    'exec':
    (code(exec, lambda m:
          (f"import os; os.system({_shell(m)!r})", )), 'builtins.exec'),
    'subprocess': (code(subprocess.check_call, lambda m:
                        (['touch', m], )), 'subprocess.check_call'),
    'STACK_GLOBAL os.system':
    (code(os.system, lambda m: (_shell(m), ), protocol=4), 'system'),
}

#: Payloads that abuse what the allow-list admits.
ABUSE_PAYLOADS: Dict[str, Payload] = {
    'getattr(HistoryBuffer, __init__)':
    (plain(Reduce(getattr, (HistoryBuffer, '__init__'))), 'getattr'),
    'getattr(HistoryBuffer, __class__)':
    (plain(Reduce(getattr, (HistoryBuffer, '__class__'))), 'getattr'),
    'getattr chain to __globals__': (plain(
        Reduce(getattr,
               (Reduce(getattr,
                       (HistoryBuffer, 'mean')), '__globals__'))), 'getattr'),
    'bytes(10**12)': (plain(Reduce(bytes, (10**12, ))), 'builtins.bytes'),
    'dtype with the refcount flag on float64':
    (numpy_state(np.dtype, ('f8', False, True),
                 (3, '<', None, None, None, -1, -1, 63)), 'numpy.dtype'),
    'dtype f8 with an object field at offset 0':
    (numpy_state(np.dtype, ('f8', False, True), (3, '|', None, ('a', ), {
        'a': (np.dtype('O'), 0)
    }, 8, 1, 63)), 'numpy.dtype'),
    'dtype f8 with a float field at offset 2**40':
    (numpy_state(np.dtype, ('f8', False, True), (3, '|', None, ('a', ), {
        'a': (_F8, 2**40)
    }, 8, 1, 16)), 'numpy.dtype'),
    'void dtype with a field at offset 2**40':
    (numpy_state(np.dtype, ('V8', False, True), (3, '|', None, ('a', ), {
        'a': (_F8, 2**40)
    }, 8, 1, 16)), 'numpy.dtype'),
    'dtype f8 with an item size of 2**40':
    (numpy_state(np.dtype, ('f8', False, True),
                 (3, '<', None, None, None, 2**40, -1, 0)), 'numpy.dtype'),
    'subarray dtype':
    (numpy_state(np.dtype, ('f8', False, True),
                 (3, '|', (_F8, (2, )), None, None, 16, 8, 0)), 'numpy.dtype'),
    'object array': (plain(np.array([None, 1], dtype=object)), 'numpy.dtype'),
    'string array': (plain(np.array(['abc'])), 'numpy.dtype'),
    'datetime scalar': (plain(np.datetime64('2020-01-01')), 'numpy.dtype'),
    'structured array': (plain(np.zeros(2,
                                        dtype=[('a', 'f8'),
                                               ('b', 'i4')])), 'numpy.dtype'),
    'object scalar': (plain(Reduce(scalar,
                                   (np.dtype('O'), None))), 'numpy.dtype'),
    'array with 3 bytes for 100 float64':
    (numpy_state(_reconstruct, (np.ndarray, (0, ), b'b'),
                 (1, (100, ), _F8, False, b'abc')), 'numpy.ndarray'),
    'array with a list as data': (numpy_state(_reconstruct,
                                              (np.ndarray, (0, ), b'b'),
                                              (1, (2, ), _F8, False, [1, 2])),
                                  'numpy.ndarray'),
    'ndarray called over a buffer': (plain(
        Reduce(np.ndarray, ((10**6, ), 'f8', b'x'))), 'numpy.ndarray'),
    'dtype class called directly': (numpy_state(
        type(_F8), (),
        (3, '<', None, None, None, 2**40, -1, 63)), 'Float64DType'),
    'matrix subclass': (plain(_matrix()), 'matrix'),
}

PAYLOADS: Dict[str, Payload] = {**CODE_PAYLOADS, **ABUSE_PAYLOADS}


def rewrite_data_pkl(path, edit: Callable[[bytes], bytes]) -> None:
    """Rewrite the pickle inside a ``torch.save`` zip archive."""
    with zipfile.ZipFile(path) as archive:
        records = [(info, archive.read(info)) for info in archive.infolist()]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w', zipfile.ZIP_STORED) as archive:
        for info, data in records:
            if info.filename.endswith('/data.pkl'):
                data = edit(data)
            archive.writestr(info.filename, data)
    with open(path, 'wb') as f:
        f.write(buffer.getvalue())


def has_stack_global(path) -> bool:
    """Whether the archive's pickle uses the STACK_GLOBAL opcode."""
    import pickletools
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith('/data.pkl'))
        data = archive.read(name)
    return any(op.name == 'STACK_GLOBAL'
               for op, _, _ in pickletools.genops(data))
