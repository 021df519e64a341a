"""Runner-side helpers: distributed set-up and mixed precision without CUDA."""
from .amp import CPUAutocastOptimWrapper, enable_amp
from .distributed import (DeviceAwareDistributedDataParallel, destroy_distributed,
                          prepare_distributed_cfg)

__all__ = [
    'CPUAutocastOptimWrapper', 'enable_amp',
    'DeviceAwareDistributedDataParallel', 'destroy_distributed',
    'prepare_distributed_cfg'
]
