"""Swin checkpoint layouts -> the mmseg/mmdet ``SwinTransformer`` key layout.

One pure function per layout, each mapping a backbone state dict (already
unwrapped, see :func:`.common.extract_backbone_state_dict`) to the layout of
mmseg's and mmdet's ``SwinTransformer`` (``stages.i.blocks.j.ffn.layers.0.0``
= fc1, ``attn.w_msa.qkv``, ``patch_embed.projection``, ``norm0..3``), which is
also the layout of :class:`~rmoe_mm.backbones.RMoESwinTransformer`'s dense
part. Keys a layout has and the mm* backbone has not (the classifier ``head``,
the final ``norm``) pass through unchanged, so the loader can report them as
ignored.

=========  ================================================================
layout     how to recognise it
=========  ================================================================
mm         ``stages.0.blocks.0.attn.w_msa.qkv.weight``,
           ``patch_embed.projection.weight`` (mmseg/mmdet backbones, whole
           segmentors/detectors after the ``backbone.`` prefix is removed,
           and RMoE checkpoints of this project)
official   ``layers.0.blocks.0.mlp.fc1.weight``, ``layers.0.downsample...``
           (microsoft/Swin-Transformer releases, weights under ``model``)
timm       like official, but the patch merging belongs to the *next*
           stage (``layers.1.downsample``, none in ``layers.0``),
           ``head.fc.weight``; features-only models use ``layers_0``
=========  ================================================================
"""
import re
from collections import OrderedDict
from typing import Callable, Dict, Tuple

import torch

from .common import (CheckpointLayoutError, StateDict, convert_layout,
                     describe_keys)

#: Buffers computed from the window size at construction; never loaded.
DERIVED_BUFFERS = ('relative_position_index', 'attn_mask')

_LAYER = re.compile(r'^layers[._](\d+)\.')
_DOWNSAMPLE = re.compile(r'^layers[._](\d+)\.downsample\.')


def _unfold_order_reduction(weight: torch.Tensor) -> torch.Tensor:
    """Patch-merging linear weight: official ``cat(x0, x1, x2, x3)`` order
    -> ``nn.Unfold``'s channel-major order used by mm* ``PatchMerging``."""
    out_channels, in_channels = weight.shape
    weight = weight.reshape(out_channels, 4, in_channels // 4)
    return weight[:, [0, 2, 1, 3], :].transpose(1, 2).reshape(
        out_channels, in_channels)


def _unfold_order_norm(weight: torch.Tensor) -> torch.Tensor:
    """Patch-merging norm weight/bias, reordered like the reduction's input."""
    in_channels = weight.shape[0]
    weight = weight.reshape(4, in_channels // 4)
    return weight[[0, 2, 1, 3], :].transpose(0, 1).reshape(in_channels)


def official_swin_to_mm(state_dict: StateDict) -> StateDict:
    """microsoft/Swin-Transformer keys -> mm* keys.

    Same mapping as mmdet's ``swin_converter`` and mmseg's
    ``tools/model_converters/swin2mmseg.py``, except that the classifier
    ``head`` is kept (to be reported as ignored) and no ``backbone.`` prefix is
    added.
    """
    converted = OrderedDict()
    for key, value in state_dict.items():
        new_key = key
        if key.startswith('layers.'):
            if '.attn.' in key:
                new_key = key.replace('.attn.', '.attn.w_msa.')
            elif '.mlp.fc1.' in key:
                new_key = key.replace('.mlp.fc1.', '.ffn.layers.0.0.')
            elif '.mlp.fc2.' in key:
                new_key = key.replace('.mlp.fc2.', '.ffn.layers.1.')
            elif '.downsample.reduction.' in key:
                value = _unfold_order_reduction(value)
            elif '.downsample.norm.' in key:
                value = _unfold_order_norm(value)
            new_key = new_key.replace('layers.', 'stages.', 1)
        elif key.startswith('patch_embed.proj.'):
            new_key = key.replace('patch_embed.proj.',
                                  'patch_embed.projection.')
        converted[new_key] = value
    return converted


def timm_swin_to_official(state_dict: StateDict) -> StateDict:
    """timm keys -> official keys: patch merging back to the end of the
    previous stage, ``layers_i`` -> ``layers.i``, ``head.fc`` -> ``head``.

    The inverse of timm's ``swin_transformer.checkpoint_filter_fn``; timm's
    merging concatenates the four neighbours in the official order, so the
    weights need no reordering here.
    """
    converted = OrderedDict()
    for key, value in state_dict.items():
        key = re.sub(r'^layers_(\d+)\.', r'layers.\1.', key)
        key = re.sub(r'^layers\.(\d+)\.downsample\.',
                     lambda m: f'layers.{int(m.group(1)) - 1}.downsample.',
                     key)
        if key.startswith('head.fc.'):
            key = 'head.' + key[len('head.fc.'):]
        converted[key] = value
    return converted


def timm_swin_to_mm(state_dict: StateDict) -> StateDict:
    """timm keys -> mm* keys (via the official layout)."""
    return official_swin_to_mm(timm_swin_to_official(state_dict))


def mm_swin_to_mm(state_dict: StateDict) -> StateDict:
    """mm* keys are already the target layout."""
    return OrderedDict(state_dict)


SWIN_CONVERTERS: Dict[str, Callable[[StateDict], StateDict]] = {
    'mm': mm_swin_to_mm,
    'official': official_swin_to_mm,
    'timm': timm_swin_to_mm,
}


def detect_swin_layout(state_dict: StateDict) -> str:
    """Which of :data:`SWIN_CONVERTERS`' layouts ``state_dict`` is in.

    Raises:
        CheckpointLayoutError: the keys fit no known Swin layout; the message
            lists what the state dict holds.
    """
    keys = list(state_dict)
    has_mm = any(k.startswith('stages.') for k in keys) or \
        'patch_embed.projection.weight' in state_dict
    layer_keys = [k for k in keys if _LAYER.match(k)]
    has_blocks = any('.blocks.' in k for k in layer_keys)
    if has_mm and not layer_keys:
        return 'mm'
    if has_blocks and not has_mm:
        if 'head.fc.weight' in state_dict or any(
                k.startswith('layers_') for k in layer_keys):
            return 'timm'
        stages = {int(_LAYER.match(k).group(1)) for k in layer_keys}
        merges = {
            int(m.group(1))
            for m in map(_DOWNSAMPLE.match, layer_keys) if m
        }
        # Official: merging closes stages 0..n-2; timm: it opens stages 1..n-1.
        if not merges or min(merges) == 0:
            return 'official'
        if max(merges) == max(stages):
            return 'timm'
    raise CheckpointLayoutError(
        'cannot tell the Swin checkpoint layout: expected mmseg/mmdet keys '
        "('stages.0.blocks.0.attn.w_msa.qkv.weight'), official Swin keys "
        "('layers.0.blocks.0.mlp.fc1.weight', 'layers.0.downsample...') or "
        "timm keys ('layers.1.downsample...', 'head.fc.weight'); the "
        f'backbone state dict holds {describe_keys(keys)}')


def convert_swin_state_dict(state_dict: StateDict,
                            layout: str = None) -> Tuple[StateDict, str]:
    """``state_dict`` in the mm* layout, and the layout it came in.

    Args:
        state_dict: a Swin backbone state dict in any layout of
            :data:`SWIN_CONVERTERS`.
        layout: force a layout instead of detecting it.
    """
    return convert_layout(state_dict, SWIN_CONVERTERS, detect_swin_layout,
                          'Swin', layout)
