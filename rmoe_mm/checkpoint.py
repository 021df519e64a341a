"""Load mmengine-saved checkpoints under torch >= 2.6's ``weights_only`` default.

mmengine 0.10.7 calls ``torch.load(filename, map_location=...)``. Since torch
2.6 that means ``weights_only=True``: a restricted unpickler that refuses every
global it does not know, and mmengine checkpoints carry a few (the
``HistoryBuffer`` of the message hub, numpy arrays and scalars in the meta).
Rather than switching ``weights_only`` off (which lets a checkpoint run
arbitrary code), :func:`install` allow-lists exactly those classes and routes
mmengine's local loader through :func:`load_local_checkpoint`, which turns a
refusal into an error that names the refused global and the file.
"""
import os.path as osp
import pickle
import re
from typing import List

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader


def _numpy_globals() -> List[object]:
    """numpy objects that pickled arrays, dtypes and scalars refer to."""
    try:  # numpy >= 2 moved the pickling helpers to numpy._core
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = [type(np.dtype(code)) for code in np.typecodes['All']]
    return [np.ndarray, np.dtype, _reconstruct, scalar, *set(dtype_classes)]


def history_buffer_method(owner, name: str):
    """``getattr`` restricted to HistoryBuffer's registered statistics.

    A pickled HistoryBuffer refers to its statistics methods
    (``HistoryBuffer.mean``, ...) as ``getattr(HistoryBuffer, 'mean')``.
    Allow-listing ``builtins.getattr`` itself would let a checkpoint walk from
    any allowed object to arbitrary code, so the unpickler's ``getattr`` is
    this function, which answers only that question.
    """
    # The built-in four are registered lazily, on the first HistoryBuffer().
    allowed = {'min', 'max', 'current', 'mean', *HistoryBuffer._statistics_methods}
    if owner is HistoryBuffer and name in allowed:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'GLOBAL builtins.getattr refused for getattr({owner!r}, {name!r}): '
        'only HistoryBuffer statistics methods may be looked up')


def safe_globals() -> List[object]:
    """The classes and functions an mmengine checkpoint may reference."""
    return [HistoryBuffer, (history_buffer_method, 'builtins.getattr'),
            *_numpy_globals()]


class CheckpointGlobalRefused(pickle.UnpicklingError):
    """A checkpoint asked the unpickler for a global outside the allow-list."""


def load_local_checkpoint(filename: str, map_location=None):
    """mmengine's local-file loader, with the allow-list and a clear refusal."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        match = re.search(r'GLOBAL ([\w.]+)', str(err))
        refused = match.group(1) if match else 'an unsupported global'
        raise CheckpointGlobalRefused(
            f'Refused to load {filename!r}: it asks the unpickler for '
            f'{refused}, which is not on the allow-list of classes mmengine '
            'checkpoints contain (rmoe_mm.checkpoint.safe_globals()). torch >= '
            '2.6 loads checkpoints with weights_only=True because unpickling an '
            'arbitrary global can execute code. If you trust this file, add '
            f'that class with torch.serialization.add_safe_globals([...]).'
        ) from err


_installed = False


def install() -> None:
    """Allow-list mmengine's checkpoint classes and use the safe local loader.

    Idempotent; called when ``rmoe_mm`` is imported.
    """
    global _installed
    if _installed:
        return
    torch.serialization.add_safe_globals(safe_globals())
    CheckpointLoader.register_scheme(prefixes='', loader=load_local_checkpoint,
                                     force=True)
    _installed = True
