"""The RMoE layer: router, token dispatch, residual-expert FFN, and the
model-level helpers that act on every RMoE FFN of a model."""
from .aux_grad import inject_aux_grad
from .balance import (moe_balance_loss, set_aux_grad_scale,
                      set_balance_loss_mode)
from .config import MoEConfig, UnknownMoESettingError
from .naming import (MOE_ROLES, RESIDUAL, ROUTER, is_moe_key, moe_layer_name,
                     moe_role)
from .params import ROLES, split_parameters
from .placement import (convert_ffn_to_moe, default_moe_blocks,
                        resolve_moe_blocks)
from .residual_ffn import BALANCE_LOSS_MODES, RMoEFFN, rmoe_layers
from .router import Routing, TopKRouter, importance_loss, load_loss
from .stats import collect_moe_stats, collect_routing

__all__ = [
    'BALANCE_LOSS_MODES', 'MOE_ROLES', 'MoEConfig', 'RESIDUAL', 'RMoEFFN',
    'ROLES', 'ROUTER', 'Routing', 'TopKRouter', 'UnknownMoESettingError',
    'collect_moe_stats', 'collect_routing', 'convert_ffn_to_moe',
    'default_moe_blocks', 'importance_loss', 'inject_aux_grad', 'is_moe_key',
    'load_loss', 'moe_balance_loss', 'moe_layer_name', 'moe_role',
    'resolve_moe_blocks', 'rmoe_layers', 'set_aux_grad_scale',
    'set_balance_loss_mode', 'split_parameters'
]
