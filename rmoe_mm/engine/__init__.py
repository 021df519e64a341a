"""Runner-side helpers: the tools' shared steps, distributed set-up and mixed
precision without CUDA."""
from .amp import CPUAutocastOptimWrapper, enable_amp
from .cli import build_runner, load_config, run_then_destroy
from .distributed import (DeviceAwareDistributedDataParallel,
                          destroy_distributed, setup_distributed)

__all__ = [
    'CPUAutocastOptimWrapper', 'enable_amp', 'build_runner', 'load_config',
    'run_then_destroy', 'DeviceAwareDistributedDataParallel',
    'destroy_distributed', 'setup_distributed'
]
