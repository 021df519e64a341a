"""Checkpoint layouts -> this project's key layouts, one pure function each.

``common`` unwraps checkpoint files and picks the backbone out of whole
models; ``swin`` and ``cvt`` map each family's official / timm /
transformers / mm* keys to this project's layout. Nothing here imports a
model class: loading the result into a backbone, with shape and MoE-layout
checks, is :mod:`rmoe_mm.backbones.loading`.
"""
from .common import (CheckpointLayoutError, extract_backbone_state_dict,
                     unwrap_state_dict)
from .swin import (SWIN_CONVERTERS, convert_swin_state_dict,
                   detect_swin_layout, official_swin_to_mm, timm_swin_to_mm)

__all__ = [
    'CheckpointLayoutError', 'SWIN_CONVERTERS', 'convert_swin_state_dict',
    'detect_swin_layout', 'extract_backbone_state_dict', 'official_swin_to_mm',
    'timm_swin_to_mm', 'unwrap_state_dict'
]
