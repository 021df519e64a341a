"""Helpers of the test suite, importable like ``mmdet.testing``.

``run_tool`` and ``load_toy_data_tool`` run files of the checkout (``tools/``),
so they need the repository, not just the installed package. The toy RMoE
model, data and hooks of :mod:`.toy_rmoe` are registered in child registries
(scope ``rmoe_mm_testing``, :mod:`.registry`); configs name them as
``'rmoe_mm_testing.ToyRMoEClassifier'``.
"""
from .configs import CONFIG_DIR, build_model, head_channels, one_step_runner
from .tools import (REPO_ROOT, TOY_NUM_TRAIN, TOY_NUM_VAL, TOY_SEED, TOY_SIZE,
                    load_toy_data_tool, run_tool)

__all__ = [
    'CONFIG_DIR', 'REPO_ROOT', 'TOY_NUM_TRAIN', 'TOY_NUM_VAL', 'TOY_SEED',
    'TOY_SIZE', 'build_model', 'head_channels', 'load_toy_data_tool',
    'one_step_runner', 'run_tool'
]
