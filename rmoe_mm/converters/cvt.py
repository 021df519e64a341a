"""CvT checkpoint layouts -> the layout of :class:`rmoe_mm.backbones.cvt.CvT`.

One pure function per layout, each mapping a backbone state dict (already
unwrapped, see :func:`.common.extract_backbone_state_dict`) to this project's
CvT layout, which is the official one with ``stage{i}`` -> ``stages.{i}`` and
the MLP as an mmcv ``FFN`` (``mlp.fc1`` -> ``ffn.layers.0.0``, ``mlp.fc2`` ->
``ffn.layers.1``). Keys the backbone has no place for (the classifier and the
final norm, a cls token of a model built without one) pass through
unchanged, so the loader reports them as ignored.

============  ===============================================================
layout        how to recognise it
============  ===============================================================
mm            ``stages.0.blocks.0.ffn.layers.0.0.weight``: :class:`CvT` /
              :class:`RMoECvT` and whole segmentors/detectors after the
              ``backbone.`` prefix is removed (named like Swin's mm*
              layout: this project's own)
official      ``stage0.patch_embed.proj.weight``,
              ``stage0.blocks.0.attn.conv_proj_q.conv.weight``,
              ``stage0.blocks.0.mlp.fc1.weight``, ``stage2.cls_token``,
              ``norm.*``, ``head.*`` (microsoft/CvT, e.g.
              ``CvT-13-224x224-IN-1k.pth``)
transformers  ``[cvt.]encoder.stages.0.embedding.convolution_embeddings.
              projection.weight``,
              ``...layers.0.attention.attention.convolution_projection_query.convolution_projection.convolution.weight``,
              ``...layers.0.intermediate.dense.weight``, ``layernorm.*``,
              ``classifier.*`` (``CvtModel`` / ``CvtForImageClassification``,
              e.g. microsoft/cvt-13)
============  ===============================================================
"""
import re
from collections import OrderedDict
from typing import Callable, Dict, List, Tuple

from .common import (CheckpointLayoutError, StateDict, convert_layout,
                     describe_keys)


def _apply_rules(state_dict: StateDict, rules: List[Tuple[re.Pattern,
                                                          str]]) -> StateDict:
    """Rename each key by the first matching rule; others pass unchanged."""
    converted = OrderedDict()
    for key, value in state_dict.items():
        for pattern, replacement in rules:
            new_key, count = pattern.subn(replacement, key, count=1)
            if count:
                key = new_key
                break
        converted[key] = value
    return converted


_OFFICIAL_RULES = [
    (re.compile(r'^stage(\d+)\.blocks\.(\d+)\.mlp\.fc1\.'),
     r'stages.\1.blocks.\2.ffn.layers.0.0.'),
    (re.compile(r'^stage(\d+)\.blocks\.(\d+)\.mlp\.fc2\.'),
     r'stages.\1.blocks.\2.ffn.layers.1.'),
    (re.compile(r'^stage(\d+)\.'), r'stages.\1.'),
]


def official_cvt_to_mm(state_dict: StateDict) -> StateDict:
    """microsoft/CvT keys -> this project's CvT keys.

    Everything but the stage prefix and the MLP names is already the same
    (``patch_embed.proj``, ``attn.conv_proj_q.conv`` / ``.bn``,
    ``attn.proj_q``, ``attn.proj``, ``norm1``, ``norm2``, ``cls_token``).
    """
    return _apply_rules(state_dict, _OFFICIAL_RULES)


_HF_STAGE = r'^encoder\.stages\.(\d+)\.'
_HF_BLOCK = _HF_STAGE + r'layers\.(\d+)\.'
_HF_ATTN = _HF_BLOCK + r'attention\.attention\.'
_HF_RULES = [
    (re.compile(_HF_STAGE +
                r'embedding\.convolution_embeddings\.projection\.'),
     r'stages.\1.patch_embed.proj.'),
    (re.compile(_HF_STAGE +
                r'embedding\.convolution_embeddings\.normalization\.'),
     r'stages.\1.patch_embed.norm.'),
    (re.compile(_HF_STAGE + r'cls_token$'), r'stages.\1.cls_token'),
]
for _name, _short in (('query', 'q'), ('key', 'k'), ('value', 'v')):
    _HF_RULES += [
        (re.compile(_HF_ATTN + rf'convolution_projection_{_name}\.'
                    r'convolution_projection\.convolution\.'),
         rf'stages.\1.blocks.\2.attn.conv_proj_{_short}.conv.'),
        (re.compile(_HF_ATTN + rf'convolution_projection_{_name}\.'
                    r'convolution_projection\.normalization\.'),
         rf'stages.\1.blocks.\2.attn.conv_proj_{_short}.bn.'),
        (re.compile(_HF_ATTN + rf'projection_{_name}\.'),
         rf'stages.\1.blocks.\2.attn.proj_{_short}.'),
    ]
_HF_RULES += [
    (re.compile(_HF_BLOCK + r'attention\.output\.dense\.'),
     r'stages.\1.blocks.\2.attn.proj.'),
    (re.compile(_HF_BLOCK + r'intermediate\.dense\.'),
     r'stages.\1.blocks.\2.ffn.layers.0.0.'),
    (re.compile(_HF_BLOCK + r'output\.dense\.'),
     r'stages.\1.blocks.\2.ffn.layers.1.'),
    (re.compile(_HF_BLOCK + r'layernorm_before\.'),
     r'stages.\1.blocks.\2.norm1.'),
    (re.compile(_HF_BLOCK + r'layernorm_after\.'),
     r'stages.\1.blocks.\2.norm2.'),
]


def transformers_cvt_to_mm(state_dict: StateDict) -> StateDict:
    """transformers ``CvtModel`` / ``CvtForImageClassification`` keys -> ours.

    The ``cvt.`` prefix of the classification model is optional; its
    ``layernorm`` and ``classifier`` pass through (and are ignored on load).
    """
    state_dict = OrderedDict(
        (key[len('cvt.'):] if key.startswith('cvt.') else key, value)
        for key, value in state_dict.items())
    return _apply_rules(state_dict, _HF_RULES)


def mm_cvt_to_mm(state_dict: StateDict) -> StateDict:
    """This project's keys are already the target layout."""
    return OrderedDict(state_dict)


CVT_CONVERTERS: Dict[str, Callable[[StateDict], StateDict]] = {
    'mm': mm_cvt_to_mm,
    'official': official_cvt_to_mm,
    'transformers': transformers_cvt_to_mm,
}


def detect_cvt_layout(state_dict: StateDict) -> str:
    """Which of :data:`CVT_CONVERTERS`' layouts ``state_dict`` is in.

    Raises:
        CheckpointLayoutError: the keys fit no known CvT layout.
    """
    keys = list(state_dict)
    if any(re.match(r'^stage\d+\.patch_embed\.', k) for k in keys):
        return 'official'
    if any(
            re.match(r'^(cvt\.)?encoder\.stages\.\d+\.embedding\.', k)
            for k in keys):
        return 'transformers'
    if any(re.match(r'^stages\.\d+\.patch_embed\.', k) for k in keys):
        return 'mm'
    raise CheckpointLayoutError(
        'cannot tell the CvT checkpoint layout: expected official keys '
        "('stage0.patch_embed.proj.weight'), transformers keys "
        "('[cvt.]encoder.stages.0.embedding.convolution_embeddings...') or "
        "this project's keys ('stages.0.patch_embed.proj.weight'); the "
        f'backbone state dict holds {describe_keys(keys)}')


def convert_cvt_state_dict(state_dict: StateDict,
                           layout: str = None) -> Tuple[StateDict, str]:
    """``state_dict`` in this project's CvT layout, and the layout it came in.

    Args:
        state_dict: a CvT backbone state dict in any layout of
            :data:`CVT_CONVERTERS`.
        layout: force a layout instead of detecting it.
    """
    return convert_layout(state_dict, CVT_CONVERTERS, detect_cvt_layout, 'CvT',
                          layout)
