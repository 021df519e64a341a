"""Checkpoint plumbing shared by every backbone.

Unwrap, pick the backbone, summarise keys.

A checkpoint file is a plain state dict (timm), a dict with the weights under
``'model'`` (official Swin / CvT releases) or ``'state_dict'`` (mmengine, timm
training checkpoints), sometimes with a ``module.`` prefix (DDP) and, for whole
mmseg segmentors / mmdet detectors, with the backbone under ``backbone.``.
These helpers reduce all of them to the backbone's own state dict; the
per-layout key renaming lives beside each backbone (e.g. :mod:`.swin`).
"""
import re
from collections import OrderedDict
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import torch

StateDict = Dict[str, torch.Tensor]

#: Keys under which checkpoint files keep their weights, in lookup order.
WEIGHT_KEYS = ('state_dict', 'model')


class CheckpointLayoutError(ValueError):
    """A checkpoint whose layout is not one this project knows how to read."""


def describe_keys(keys: Iterable[str], limit: int = 8) -> str:
    """``'N keys, e.g. a, b, ...; top-level: x (n), y (m)'`` for errors."""
    keys = list(keys)
    top: Dict[str, int] = OrderedDict()
    for key in keys:
        head = key.split('.', 1)[0]
        top[head] = top.get(head, 0) + 1
    tops = ', '.join(f'{name} ({count})' for name, count in top.items())
    sample = ', '.join(keys[:limit]) + (', ...' if len(keys) > limit else '')
    return f'{len(keys)} keys, e.g. {sample}; top-level names: {tops}'


def summarise_keys(keys: Iterable[str], limit: int = 6) -> str:
    """Keys grouped by pattern (block indices as ``*``), for one-line logs.

    ``stages.2.blocks.1.ffn.router.weight`` and
    ``stages.2.blocks.3.ffn.router.weight`` become
    ``stages.*.blocks.*.ffn.router.weight (x2)``.
    """
    groups: Dict[str, int] = OrderedDict()
    for key in keys:
        pattern = re.sub(r'(?<=\.)\d+(?=\.)|^\d+(?=\.)', '*', key)
        groups[pattern] = groups.get(pattern, 0) + 1
    items = [p if n == 1 else f'{p} (x{n})' for p, n in groups.items()]
    if len(items) > limit:
        items = items[:limit] + [f'... {len(items) - limit} more patterns']
    return ', '.join(items) if items else '-'


def unwrap_state_dict(checkpoint: Mapping) -> StateDict:
    """The weights of a loaded checkpoint file, whichever wrapper holds them.

    Raises:
        CheckpointLayoutError: no tensors found at the top level, under
            ``'state_dict'`` or under ``'model'``.
    """
    if not isinstance(checkpoint, Mapping):
        raise CheckpointLayoutError(
            f'expected a checkpoint dict, got {type(checkpoint).__name__}')
    for key in WEIGHT_KEYS:
        if isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
            break
    state_dict = OrderedDict(
        (k, v) for k, v in checkpoint.items() if isinstance(v, torch.Tensor))
    if not state_dict:
        raise CheckpointLayoutError(
            'found no weights in the checkpoint: looked under '
            f'{", ".join(repr(k) for k in WEIGHT_KEYS)} and at the top level; '
            f'it holds {describe_keys(map(str, checkpoint.keys()))}')
    return state_dict


def strip_prefix(state_dict: StateDict, prefix: str) -> StateDict:
    """``state_dict`` without ``prefix`` when every key carries it.

    E.g. ``module.``.
    """
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return OrderedDict((k[len(prefix):], v) for k, v in state_dict.items())
    return state_dict


def select_prefix(state_dict: StateDict,
                  prefix: str) -> Tuple[StateDict, List[str]]:
    """Keys under ``prefix`` (stripped) and the list of all other keys."""
    selected = OrderedDict((k[len(prefix):], v) for k, v in state_dict.items()
                           if k.startswith(prefix))
    others = [k for k in state_dict if not k.startswith(prefix)]
    return selected, others


def extract_backbone_state_dict(
        checkpoint: Mapping,
        prefix: Optional[str] = None) -> Tuple[StateDict, List[str]]:
    """The backbone's weights in a checkpoint file and the keys left out.

    Args:
        checkpoint: a loaded checkpoint file (any wrapper, see module doc).
        prefix: the backbone's prefix inside a whole model, as in mmengine's
            ``init_cfg=dict(type='Pretrained', prefix='backbone.')``. With
            ``None``, a ``backbone.`` prefix is taken when present, otherwise
            the whole state dict is the backbone's.

    Returns:
        The backbone state dict with its prefix removed, and the keys of the
        other parts of the model (decode head, neck, ...) that were left out.

    Raises:
        CheckpointLayoutError: ``prefix`` was given and no key carries it.
    """
    state_dict = strip_prefix(unwrap_state_dict(checkpoint), 'module.')
    if prefix is None:
        if not any(k.startswith('backbone.') for k in state_dict):
            return state_dict, []
        prefix = 'backbone.'
    if not prefix.endswith('.'):
        prefix += '.'
    selected, others = select_prefix(state_dict, prefix)
    if not selected:
        raise CheckpointLayoutError(
            f'no key of the checkpoint starts with {prefix!r}; it holds '
            f'{describe_keys(state_dict)}')
    return selected, others


def convert_layout(state_dict: StateDict,
                   converters: Mapping[str, Callable],
                   detect: Callable[[StateDict], str],
                   family: str,
                   layout: Optional[str] = None) -> Tuple[StateDict, str]:
    """``state_dict`` converted by ``converters[layout]``, and the layout.

    Args:
        state_dict: a backbone state dict in one of ``converters``' layouts.
        converters: layout name -> pure function to this project's layout.
        detect: tells the layout from the keys when ``layout`` is None.
        family: backbone family for messages (``'Swin'``, ``'CvT'``).
        layout: force a layout instead of detecting it.
    """
    if layout is None:
        try:
            layout = detect(state_dict)
        except CheckpointLayoutError as err:
            from rmoe_mm.checkpoint.fit import backbone_family
            other = backbone_family(state_dict)
            if other is None or other == family:
                raise
            raise CheckpointLayoutError(
                f'this is a {other} checkpoint, not a {family} one: {err}'
            ) from None
    if layout not in converters:
        raise ValueError(f'unknown {family} layout {layout!r}; known: '
                         f'{", ".join(converters)}')
    return converters[layout](state_dict), layout
