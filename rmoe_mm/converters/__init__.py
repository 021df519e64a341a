"""Checkpoint layouts -> this project's key layouts, one pure function each.

``common`` unwraps checkpoint files and picks the backbone out of whole
models; ``swin`` maps official / timm / mm* Swin keys to the mm* layout;
``loading`` loads the result into an RMoE backbone with shape and MoE-layout
checks and a report of loaded / initialised / ignored keys.
"""
from .common import (CheckpointLayoutError, extract_backbone_state_dict,
                     unwrap_state_dict)
from .loading import CheckpointMismatchError, LoadReport, load_rmoe_state_dict
from .swin import (SWIN_CONVERTERS, convert_swin_state_dict,
                   detect_swin_layout, official_swin_to_mm, timm_swin_to_mm)

__all__ = [
    'CheckpointLayoutError', 'CheckpointMismatchError', 'LoadReport',
    'SWIN_CONVERTERS', 'convert_swin_state_dict', 'detect_swin_layout',
    'extract_backbone_state_dict', 'load_rmoe_state_dict',
    'official_swin_to_mm', 'timm_swin_to_mm', 'unwrap_state_dict'
]
