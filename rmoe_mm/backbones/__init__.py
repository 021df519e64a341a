"""RMoE backbones, registered for both the mmseg and the mmdet scope."""
from .base import RMoEBackboneMixin
from .cvt import CvT
from .loading import CheckpointMismatchError, LoadReport, load_rmoe_state_dict
from .rmoe_cvt import RMoECvT
from .rmoe_swin import RMoESwinTransformer

__all__ = [
    'CheckpointMismatchError', 'CvT', 'LoadReport', 'RMoEBackboneMixin',
    'RMoECvT', 'RMoESwinTransformer', 'load_rmoe_state_dict'
]
