"""Checkpoints from strangers: safe loading on every path, and strict fits.

Checkpoints are pickles, and unpickling can run code. torch >= 2.6 loads
with ``weights_only=True``, a restricted unpickler, but mmengine 0.10.7
reaches other loaders too (torch hub's ``load_state_dict_from_url`` for every
URL scheme, which unpickles fully), and its checkpoints hold objects the
restricted unpickler refuses (the message hub's ``HistoryBuffer``, numpy
values). Importing ``rmoe_mm`` calls :func:`install`, which sends every
scheme of mmengine's ``CheckpointLoader`` through
:func:`load_checkpoint_file`: a pre-scan that admits only allow-listed
globals and plain numeric numpy objects, then ``torch.load(weights_only=True)``
with that allow-list. A refused file loads only if it is trusted by name
(``RMOE_MM_TRUSTED_CHECKPOINTS``, ``--trust-checkpoint``), logged at WARNING.

:mod:`.fit` checks that a state dict fits the model it is loaded into, so
that no load is silently partial. docs/security.md has the whole story.
"""
from .allowlist import history_buffer_method, safe_globals
from .loader import hub_cache_file, load_checkpoint_file, load_url
from .prescan import CheckpointGlobalRefused, prescan
from .schemes import install as _install_schemes
from .schemes import scheme_loaders, unsafe_schemes
from .trust import (ENV_TRUSTED, is_trusted, trust_checkpoint,
                    trusted_checkpoints)

__all__ = [
    'CheckpointGlobalRefused', 'ENV_TRUSTED', 'history_buffer_method',
    'hub_cache_file', 'install', 'is_trusted', 'load_checkpoint_file',
    'load_url', 'prescan', 'safe_globals', 'scheme_loaders',
    'trust_checkpoint', 'trusted_checkpoints', 'unsafe_schemes'
]


def install() -> None:
    """Route mmengine's checkpoint loading through the safe loader.

    Idempotent; called when ``rmoe_mm`` is imported. Nothing is added to
    torch's global ``weights_only`` allow-list: the numpy and HistoryBuffer
    entries are active only inside :func:`load_checkpoint_file`, after the
    pre-scan, so a plain ``torch.load`` elsewhere stays as strict as torch's.
    """
    _install_schemes()
