"""The balance loss as a ``loss_moe`` entry of the model's losses (opt-in).

By default an RMoE model trains its routers' balance loss through an
injected gradient, with no change to the segmentor or detector
(:mod:`rmoe_mm.moe.balance`). :class:`MoELossHook` switches a model to the
other way: its RMoE FFNs keep their balance losses and the model's loss dict
gains ``loss_moe = sum over layers of weight * balance loss``. mmengine then
sums it into the loss it backpropagates (the optimizer wrapper scales it
like every loss, so no ``aux_grad_scale`` is needed) and logs it like every
other loss::

    custom_hooks = [dict(type='MoELossHook')]

The gradients are those of the injected mode.
"""
import logging

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from torch import nn
from torch.utils.hooks import RemovableHandle

from rmoe_mm.moe import moe_balance_loss, rmoe_layers, set_balance_loss_mode
from rmoe_mm.registry import HOOKS

#: The key of the balance loss in the model's losses.
LOSS_KEY = 'loss_moe'


def _add_loss_moe(module: nn.Module, args, kwargs, output):
    # mmengine's train_step calls ``model(**data, mode='loss')``.
    if kwargs.get('mode') != 'loss':
        return None
    loss = moe_balance_loss(module)
    if loss is None:
        return None
    if LOSS_KEY in output:
        raise KeyError(f'the losses of {type(module).__name__} already hold '
                       f'{LOSS_KEY!r}; MoELossHook cannot add its own')
    output[LOSS_KEY] = loss
    return output


def attach_loss_moe(model: nn.Module) -> RemovableHandle:
    """Put ``model``'s balance losses into its losses as ``loss_moe``.

    Switches every RMoE FFN of ``model`` (an mmengine ``BaseModel``, not a
    wrapper) to ``'loss'`` mode and registers a forward hook that adds
    ``loss_moe`` to the dict ``model(..., mode='loss')`` returns. Undo with
    :func:`detach_loss_moe`.

    Returns:
        The forward hook's handle.
    """
    set_balance_loss_mode(model, 'loss')
    return model.register_forward_hook(_add_loss_moe, with_kwargs=True)


def detach_loss_moe(model: nn.Module, handle: RemovableHandle) -> None:
    """Back to the injected gradient: undo :func:`attach_loss_moe`."""
    handle.remove()
    set_balance_loss_mode(model, 'gradient')


@HOOKS.register_module()
class MoELossHook(Hook):
    """Trains the RMoE balance loss as a ``loss_moe`` term of the losses.

    See the module docstring. Without this hook the balance loss trains
    through the injected gradient, with the same gradients.
    """

    priority = 'NORMAL'

    def __init__(self):
        self._handle = None

    def before_train(self, runner) -> None:
        model = self._model(runner)
        self._handle = attach_loss_moe(model)
        if not any(True for _ in rmoe_layers(model)):
            print_log(
                'MoELossHook: the model has no RMoE FFN; loss_moe '
                'will not appear',
                logger='current',
                level=logging.WARNING)

    def after_train(self, runner) -> None:
        if self._handle is not None:
            detach_loss_moe(self._model(runner), self._handle)
            self._handle = None

    @staticmethod
    def _model(runner) -> nn.Module:
        model = runner.model
        return model.module if is_model_wrapper(model) else model
