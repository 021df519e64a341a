"""Runner hooks: RMoE training stages, the opt-in ``loss_moe`` term, MoE
statistics, resumable randomness."""
from .iteration_seed import IterationSeedHook
from .moe_loss import MoELossHook, attach_loss_moe, detach_loss_moe
from .moe_stats import MoEStatsHook
from .stage_hook import (RMoEStageHook, aux_grad_scale_from_optim_wrapper,
                         rewrap_ddp)

__all__ = [
    'IterationSeedHook', 'MoELossHook', 'MoEStatsHook', 'RMoEStageHook',
    'attach_loss_moe', 'aux_grad_scale_from_optim_wrapper',
    'detach_loss_moe', 'rewrap_ddp'
]
