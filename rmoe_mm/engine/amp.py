"""Mixed precision on the CPU for ``tools/train.py --amp``.

mmengine's ``AmpOptimWrapper`` asserts a GPU. On the CPU, autocast runs in
bfloat16, whose exponent range matches fp32, so no loss scaler is needed:
this wrapper is the plain ``OptimWrapper`` with the forward under autocast.
"""
from contextlib import contextmanager

import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class CPUAutocastOptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose ``optim_context`` runs under CPU autocast.

    Args:
        dtype (str): autocast dtype, ``'bfloat16'`` (default) or ``'float16'``.
        **kwargs: the arguments of ``OptimWrapper``.
    """

    def __init__(self, dtype: str = 'bfloat16', **kwargs):
        if dtype not in ('bfloat16', 'float16'):
            raise ValueError(
                f"dtype must be 'bfloat16' or 'float16', got {dtype!r}")
        super().__init__(**kwargs)
        self.cast_dtype = getattr(torch, dtype)

    @contextmanager
    def optim_context(self, model):
        with super().optim_context(model), torch.autocast(
                device_type='cpu', dtype=self.cast_dtype):
            yield


def enable_amp(cfg) -> None:
    """What ``--amp`` means on this machine: fp16 with a dynamic loss scale on
    a GPU (mmseg/mmdet's choice), bfloat16 autocast on the CPU."""
    if torch.cuda.is_available():
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    else:
        cfg.optim_wrapper.type = 'CPUAutocastOptimWrapper'
        cfg.optim_wrapper.pop('loss_scale', None)
