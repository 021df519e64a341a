"""The RMoE layer: router, token dispatch, residual-expert FFN, parameter groups."""
from .placement import convert_ffn_to_moe, default_moe_blocks, resolve_moe_blocks

__all__ = ['convert_ffn_to_moe', 'default_moe_blocks', 'resolve_moe_blocks']
