"""RMoE backbones, registered for both the mmseg and the mmdet scope."""
from .rmoe_swin import ARCH_SETTINGS as SWIN_ARCH_SETTINGS
from .rmoe_swin import RMoESwinTransformer

__all__ = ['RMoESwinTransformer', 'SWIN_ARCH_SETTINGS']
