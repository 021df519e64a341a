"""The official Swin rule for stages whose feature map fits in one window.

microsoft/Swin-Transformer (``SwinTransformerBlock.__init__``) builds each
block for a fixed input resolution: where the block's feature map at that
resolution is not larger than the window, it turns the cyclic shift off and
shrinks the window to the map. mmseg's and mmdet's Swin, which
:class:`~rmoe_mm.backbones.RMoESwinTransformer` reuses, always shift every
odd block and mask the wrapped-around tokens; on the official checkpoints
that changes stage 4 at 224 px (7 x 7 tokens, window 7). Classification
configs apply the official rule so that the official checkpoints give the
official logits; dense-prediction configs keep mmseg's behaviour, which is
what their numbers were measured with.
"""
import math
from typing import List, Sequence, Tuple, Union

from mmseg.models.backbones.swin import WindowMSA
from torch import nn


def stage_resolutions(img_size: Union[int, Sequence[int]],
                      strides: Sequence[int]) -> List[Tuple[int, int]]:
    """Feature map size ``(H, W)`` of each stage for an ``img_size`` input.

    mmseg pads patch embedding and patch merging up to a multiple of their
    stride, hence the ceilings.
    """
    if isinstance(img_size, int):
        img_size = (img_size, img_size)
    height, width = img_size
    sizes = []
    for stride in strides:
        height, width = math.ceil(height / stride), math.ceil(width / stride)
        sizes.append((height, width))
    return sizes


def _shrink_window(attn: nn.Module, window: int) -> None:
    """Give a ``ShiftWindowMSA`` a smaller window: a new relative position
    table and index of that size, the same q/k/v and output projections."""
    old = attn.w_msa
    new = WindowMSA(
        embed_dims=old.embed_dims,
        num_heads=old.num_heads,
        window_size=(window, window))
    new.scale = old.scale
    for name in ('qkv', 'attn_drop', 'proj', 'proj_drop'):
        setattr(new, name, getattr(old, name))
    attn.w_msa = new
    attn.window_size = window


def apply_official_window_rule(stages: Sequence[nn.Module],
                               img_size: Union[int, Sequence[int]],
                               strides: Sequence[int]) -> List[dict]:
    """Turn the shift off (and shrink the window) where the official Swin does.

    Args:
        stages: mmseg/mmdet ``SwinBlockSequence`` modules, whose blocks hold
            a ``ShiftWindowMSA`` as ``attn``.
        img_size: the input size the rule is decided at (the official code's
            ``img_size``; here ``pretrain_img_size``).
        strides: patch embedding and patch merging strides, one per stage.

    Returns:
        One dict per changed block: ``stage``, ``block``, ``resolution``,
        ``window`` (before -> after) and whether the shift was turned off.
    """
    changes = []
    for index, (stage, resolution) in enumerate(
            zip(stages, stage_resolutions(img_size, strides))):
        side = min(resolution)
        for block_index, block in enumerate(stage.blocks):
            attn = block.attn
            if side > attn.window_size:
                continue
            change = dict(
                stage=index,
                block=block_index,
                resolution=resolution,
                window=(attn.window_size, side),
                shift_off=attn.shift_size > 0)
            attn.shift_size = 0
            if side < attn.window_size:
                _shrink_window(attn, side)
            changes.append(change)
    return changes
