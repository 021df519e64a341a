"""The globals an mmengine checkpoint may name, beyond torch's own list.

mmengine checkpoints carry a few objects that torch's ``weights_only``
unpickler does not know: the message hub's ``HistoryBuffer`` (whose pickle
looks its statistics methods up with ``getattr``) and numpy arrays, scalars
and dtypes in the meta and the message hub. These are allow-listed only
inside :func:`rmoe_mm.checkpoint.load_checkpoint_file`, and only after
:mod:`.prescan` has checked every numpy object in the file, because numpy
rebuilds a dtype from whatever state the pickle gives it (an object field
over raw bytes, a field at offset 2**40) and so lets a file corrupt memory.
"""
import pickle
from typing import Dict, List, Tuple

import numpy as np
from mmengine.logging.history_buffer import HistoryBuffer

try:  # numpy >= 2 moved the pickling helpers to numpy._core
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray

#: Kinds of the dtypes a checkpoint may hold: bool, int, uint, float, complex.
NUMERIC_KINDS = 'biufc'

#: The module paths numpy 1.x and 2.x write for the array / scalar helpers.
NUMPY_HELPER_MODULES = ('numpy._core.multiarray', 'numpy.core.multiarray')


def numeric_dtypes() -> List[np.dtype]:
    """Every plain numeric numpy dtype of this platform."""
    dtypes = {np.dtype(code) for code in np.typecodes['All']}
    return sorted((d for d in dtypes if d.kind in NUMERIC_KINDS), key=str)


def history_buffer_method(owner, name: str):
    """``getattr`` restricted to HistoryBuffer's registered statistics.

    A pickled HistoryBuffer refers to its statistics methods
    (``HistoryBuffer.mean``, ...) as ``getattr(HistoryBuffer, 'mean')``.
    Allow-listing ``builtins.getattr`` itself would let a checkpoint walk from
    any allowed object to arbitrary code, so the unpickler's ``getattr`` is
    this function, which answers only that question.
    """
    if owner is HistoryBuffer and name in history_buffer_statistics():
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'GLOBAL builtins.getattr refused for getattr({owner!r}, {name!r}): '
        'only HistoryBuffer statistics methods may be looked up')


def history_buffer_statistics() -> set:
    """Names ``getattr(HistoryBuffer, name)`` may answer."""
    # The built-in four are registered lazily, on the first HistoryBuffer().
    return {
        'min', 'max', 'current', 'mean', *HistoryBuffer._statistics_methods
    }


def numpy_globals() -> List[Tuple[object, str]]:
    """numpy objects pickled arrays, scalars and dtypes refer to, by name.

    The dtype classes (``Float64DType``, ...) are listed because torch's
    unpickler calls ``__setstate__`` only on instances of listed classes;
    they get names no pickle can spell, so a file cannot call them. Only
    the numeric ones are listed: a void, object or string dtype cannot
    even receive its state.
    """
    names = [(np.dtype, 'numpy.dtype'), (np.ndarray, 'numpy.ndarray')]
    for module in NUMPY_HELPER_MODULES:
        names += [(_multiarray._reconstruct, f'{module}._reconstruct'),
                  (_multiarray.scalar, f'{module}.scalar')]
    for dtype in numeric_dtypes():
        cls = type(dtype)
        names.append((cls, f'rmoe_mm.unreachable.{cls.__name__}'))
    return names


def safe_globals() -> List[object]:
    """What :func:`~rmoe_mm.checkpoint.load_checkpoint_file` adds to torch's
    ``weights_only`` allow-list while it loads a pre-scanned file."""
    return [
        HistoryBuffer, (history_buffer_method, 'builtins.getattr'),
        (bytes, 'builtins.bytes'), *numpy_globals()
    ]


def allowed_names() -> Dict[str, str]:
    """Global name -> why it is allowed, for docs and error messages."""
    why = {
        'mmengine.logging.history_buffer.HistoryBuffer':
        "the message hub's logged scalars",
        'builtins.getattr': 'only getattr(HistoryBuffer, <statistics method>)',
        'builtins.bytes': "only bytes() (an empty array's data)",
        'numpy.dtype': 'plain numeric dtypes, state checked',
        'numpy.ndarray': "only as _reconstruct's first argument",
    }
    for module in NUMPY_HELPER_MODULES:
        why[f'{module}._reconstruct'] = 'numeric arrays, size checked'
        why[f'{module}.scalar'] = 'numeric scalars, size checked'
    return why
