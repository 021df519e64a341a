"""Runner hooks: RMoE training stages, MoE statistics, resumable randomness."""
from .iteration_seed import IterationSeedHook
from .moe_stats import MoEStatsHook
from .stage_hook import RMoEStageHook, rewrap_ddp, split_parameters

__all__ = [
    'IterationSeedHook', 'MoEStatsHook', 'RMoEStageHook', 'rewrap_ddp',
    'split_parameters'
]
