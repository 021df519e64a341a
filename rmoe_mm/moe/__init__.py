"""The RMoE layer: router, token dispatch, residual-expert FFN, parameter groups."""
from .params import (GROUPS, RESIDUAL_KEY, ROUTER_KEY, collect_moe_stats,
                     moe_param_groups, set_core_requires_grad)
from .placement import convert_ffn_to_moe, default_moe_blocks, resolve_moe_blocks
from .residual_ffn import (RMoEFFN, aux_grad_scale,
                           aux_grad_scale_from_optim_wrapper,
                           get_aux_grad_scale, set_aux_grad_scale)
from .router import TopKRouter, importance_loss, load_loss

__all__ = [
    'convert_ffn_to_moe', 'default_moe_blocks', 'resolve_moe_blocks',
    'RMoEFFN', 'TopKRouter', 'importance_loss', 'load_loss',
    'moe_param_groups', 'set_core_requires_grad', 'collect_moe_stats',
    'GROUPS', 'RESIDUAL_KEY', 'ROUTER_KEY', 'set_aux_grad_scale',
    'get_aux_grad_scale', 'aux_grad_scale', 'aux_grad_scale_from_optim_wrapper'
]
