"""RMoE backbones, registered for both the mmseg and the mmdet scope."""
from .cvt import CvT, RMoECvT
from .rmoe_swin import ARCH_SETTINGS as SWIN_ARCH_SETTINGS
from .rmoe_swin import RMoESwinTransformer

__all__ = ['CvT', 'RMoECvT', 'RMoESwinTransformer', 'SWIN_ARCH_SETTINGS']
