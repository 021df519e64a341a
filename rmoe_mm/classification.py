"""The classification end of an ImageNet checkpoint, for mmpretrain models.

Official Swin and CvT ImageNet checkpoints end with a final norm (``norm``,
applied after the last stage) and a linear classifier (``head``). In an
mmpretrain ``ImageClassifier`` whose backbone is an RMoE backbone these are
the backbone's last output norm (``norm3`` of Swin, ``norm2`` of CvT, as in
mmpretrain's own converted checkpoints) and the head's ``fc``:

- the backbone moves the final norm when its ``init_cfg`` says
  ``final_norm=True`` (:func:`move_final_norm`); mmseg and mmdet leave the
  final norm out, so dense-prediction configs do not set it;
- the head loads its weights through the weight initialiser
  ``dict(type='PretrainedHead', checkpoint=...)`` (:class:`PretrainedHead`),
  when the class count matches, and says in the log what it did.
"""
from collections import OrderedDict
from typing import Optional, Tuple

import torch
from mmengine.logging import print_log
from mmengine.model.weight_init import BaseInit, update_init_info
from mmengine.runner.checkpoint import CheckpointLoader
from torch import nn

from rmoe_mm.converters.common import (StateDict, strip_prefix,
                                       unwrap_state_dict)
from rmoe_mm.registry import WEIGHT_INITIALIZERS

#: Where checkpoint layouts keep the linear classifier (weight, bias).
HEAD_KEYS = OrderedDict(
    official=('head.weight', 'head.bias'),  # microsoft Swin / CvT
    mmpretrain=('head.fc.weight', 'head.fc.bias'),  # mmpretrain, timm Swin
    transformers=('classifier.weight', 'classifier.bias'),  # HF CvT
)
#: Prefixes of the final norm (after the last stage) in checkpoint layouts.
FINAL_NORM_PREFIXES = ('norm.', 'layernorm.')


def move_final_norm(state_dict: StateDict, target: str) -> StateDict:
    """``state_dict`` with its final norm (``norm.*``, or transformers'
    ``layernorm.*``) renamed to ``target.*``, e.g. ``norm3``.

    Checkpoints without one (mm-layout ones already hold ``target``) are
    returned unchanged.
    """
    moved = OrderedDict()
    for key, value in state_dict.items():
        for prefix in FINAL_NORM_PREFIXES:
            if key.startswith(prefix):
                key = f'{target}.{key[len(prefix):]}'
                break
        moved[key] = value
    return moved


def find_classifier_head(
    state_dict: StateDict
) -> Optional[Tuple[str, torch.Tensor, Optional[torch.Tensor]]]:
    """``(layout, weight, bias)`` of the linear classifier, or None."""
    for layout, (weight, bias) in HEAD_KEYS.items():
        if weight in state_dict:
            return layout, state_dict[weight], state_dict.get(bias)
    return None


def _linear_of(module: nn.Module) -> nn.Linear:
    if isinstance(module, nn.Linear):
        return module
    fc = getattr(module, 'fc', None)
    if isinstance(fc, nn.Linear):
        return fc
    raise TypeError(
        f'PretrainedHead initialises an nn.Linear or a head with an `fc` '
        f'Linear (mmpretrain LinearClsHead); got {type(module).__name__}')


@WEIGHT_INITIALIZERS.register_module(name='PretrainedHead')
class PretrainedHead(BaseInit):
    """Initialise a linear classification head from a checkpoint's classifier.

    Reads ``head.weight`` (official Swin/CvT), ``head.fc.weight`` (mmpretrain,
    timm) or ``classifier.weight`` (transformers), through the project's safe
    checkpoint loader. A classifier of another class count (or input width)
    is not loaded: the head keeps its initialisation and the log says so, so
    finetuning on another label set is the same config with another
    ``num_classes``.

    Args:
        checkpoint (str): Checkpoint file.
        required (bool): Raise if the checkpoint has no classifier at all
            (rather than only logging it). Defaults to True.
    """

    def __init__(self, checkpoint: str, required: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.checkpoint = checkpoint
        self.required = required
        self.result = ''

    def __call__(self, module: nn.Module) -> None:
        fc = _linear_of(module)
        ckpt = CheckpointLoader.load_checkpoint(
            self.checkpoint, map_location='cpu', logger='current')
        state_dict = strip_prefix(unwrap_state_dict(ckpt), 'module.')
        found = find_classifier_head(state_dict)
        if found is None:
            message = (f'{self.checkpoint} has no classification head (looked '
                       f'for {", ".join(w for w, _ in HEAD_KEYS.values())})')
            if self.required:
                raise KeyError(message + '; drop the PretrainedHead init_cfg '
                               'to start the head from scratch')
            self.result = message + '; the head keeps its initialisation'
        else:
            layout, weight, bias = found
            if weight.shape != fc.weight.shape or (bias is None) != (fc.bias
                                                                     is None):
                self.result = (
                    f'classification head of {self.checkpoint} not loaded: '
                    f'it maps {weight.shape[1]} channels to {weight.shape[0]} '
                    f'classes, the model {fc.in_features} to '
                    f'{fc.out_features}; the head keeps its initialisation')
            else:
                with torch.no_grad():
                    fc.weight.copy_(weight)
                    if bias is not None:
                        fc.bias.copy_(bias)
                self.result = (f'classification head loaded from '
                               f'{self.checkpoint} ({layout} layout, '
                               f'{weight.shape[0]} classes)')
        print_log(self.result, logger='current')
        if hasattr(module, '_params_init_info'):
            update_init_info(module, init_info=self._get_init_info())

    def _get_init_info(self) -> str:
        return f'{self.__class__.__name__}: {self.result or self.checkpoint}'
