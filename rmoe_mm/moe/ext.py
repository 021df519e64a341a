"""The optional C++ build of the blocked expert loop (``csrc/``).

:mod:`.experts` runs its ``'blocked'`` path through this extension when it
is built, else through the same loop in Python. The extension makes one
OpenMP parallel region per pass (experts split among the threads) instead of
one per GEMM and per add, which matters with 2+ threads, above all on a
loaded machine, and drops the Python call per block.

``tools/setup_env.sh`` builds it once (``python -m rmoe_mm.moe.ext``);
``RMOE_MM_EXT`` chooses what happens at run time: ``auto`` (default) loads it
if it was built and otherwise uses the Python loop, ``build`` builds it at
first use if needed, ``off`` never uses it.
"""
import logging
import os
import os.path as osp
import sys
import warnings
from typing import Optional

NAME = 'rmoe_mm_blocked_experts'
SOURCE = osp.join(
    osp.dirname(osp.abspath(__file__)), 'csrc', 'blocked_experts.cpp')

_extension = None
_tried = False


def build_dir() -> str:
    """Where the extension is compiled (``RMOE_MM_EXT_DIR`` or
    ``~/.cache/rmoe_mm/torch_extensions``)."""
    return os.environ.get('RMOE_MM_EXT_DIR',
                          osp.expanduser('~/.cache/rmoe_mm/torch_extensions'))


def build(verbose: bool = False):
    """Compile (or load, if up to date) the extension and return it."""
    # Importing cpp_extension on a machine without a CUDA runtime logs a
    # warning about CUDA_HOME that does not concern a CPU extension.
    logger = logging.getLogger('torch.utils.cpp_extension')
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils.cpp_extension import load
    finally:
        logger.setLevel(level)

    # ninja comes with the virtual environment, whose bin/ may not be on
    # PATH when its python is called directly.
    bin_dir = osp.dirname(sys.executable)
    if bin_dir not in os.environ.get('PATH', '').split(os.pathsep):
        os.environ['PATH'] = bin_dir + os.pathsep + os.environ.get('PATH', '')
    os.makedirs(build_dir(), exist_ok=True)
    return load(
        NAME, [SOURCE],
        build_directory=build_dir(),
        extra_cflags=['-O3', '-fopenmp'],
        extra_ldflags=['-fopenmp'],
        verbose=verbose)


def get():
    """The loaded extension, or None (use the Python loop)."""
    global _extension, _tried
    if _tried:
        return _extension
    _tried = True
    mode = os.environ.get('RMOE_MM_EXT', 'auto')
    if mode not in ('auto', 'build', 'off'):
        raise ValueError(f"RMOE_MM_EXT must be 'auto', 'build' or 'off', "
                         f'got {mode!r}')
    if mode == 'off' or (mode == 'auto' and not is_built()):
        return None
    try:
        _extension = build()
    except Exception as err:  # no compiler, no ninja, ...
        warnings.warn(f'rmoe_mm: the C++ expert loop could not be built '
                      f'({type(err).__name__}: {err}); using the PyTorch '
                      'loop, which computes the same')
        _extension = None
    return _extension


def is_built() -> bool:
    """Whether a compiled extension exists in :func:`build_dir`."""
    return osp.exists(osp.join(build_dir(), f'{NAME}.so'))


def set_enabled(enabled: Optional[bool]) -> None:
    """For tests and benchmarks: force the extension on (build it if
    needed), off, or back to ``RMOE_MM_EXT`` (None)."""
    global _extension, _tried
    if enabled is None:
        _extension, _tried = None, False
    elif enabled:
        _extension, _tried = build(), True
    else:
        _extension, _tried = None, True


if __name__ == '__main__':
    build(verbose='-v' in sys.argv)
    print(osp.join(build_dir(), f'{NAME}.so'))
