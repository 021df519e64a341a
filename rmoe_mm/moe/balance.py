"""How a model's balance losses reach the optimizer, set per model.

Every RMoE FFN computes a balance loss in training. Two ways to train it:

- **injected gradient** (default, ``'gradient'`` mode): each layer adds
  ``balance_loss_weight * aux_grad_scale`` as its loss's gradient in the
  backward pass; nothing outside the backbone changes. ``aux_grad_scale``
  belongs to each layer, and :func:`set_aux_grad_scale` sets it for one
  model (``RMoEStageHook`` does, every iteration, from the optimizer
  wrapper), so two models in one process never share it.
- **a loss term** (``'loss'`` mode): each layer keeps its loss and
  :func:`moe_balance_loss` returns ``sum(weight * loss)`` over the layers, to
  be added to the model's losses; ``MoELossHook`` adds it as ``loss_moe``,
  so the optimizer wrapper scales it like any loss and mmengine logs it.

Both give the same gradients.
"""
from typing import Optional

import torch
from torch import Tensor, nn

from .residual_ffn import BALANCE_LOSS_MODES, rmoe_layers


def set_aux_grad_scale(model: nn.Module, scale: float) -> int:
    """Set the injected balance-loss gradient factor of every RMoE FFN.

    The main loss reaches ``backward`` multiplied by the optimizer wrapper's
    factors (``AmpOptimWrapper``: the dynamic loss scale; gradient
    accumulation: ``1 / accumulative_counts``); call this before each
    iteration's backward with the same factor. Returns the number of layers.
    """
    layers = 0
    for _, layer in rmoe_layers(model):
        layer.aux_grad_scale = float(scale)
        layers += 1
    return layers


def set_balance_loss_mode(model: nn.Module, mode: str) -> int:
    """``'gradient'`` or ``'loss'`` for every RMoE FFN of ``model``.

    Returns the number of layers.
    """
    if mode not in BALANCE_LOSS_MODES:
        raise ValueError(f'balance loss mode must be one of '
                         f'{BALANCE_LOSS_MODES}, got {mode!r}')
    layers = 0
    for _, layer in rmoe_layers(model):
        layer.balance_loss_mode = mode
        layer.pop_kept_balance_loss()
        layers += 1
    return layers


def moe_balance_loss(model: nn.Module) -> Optional[Tensor]:
    """``sum(balance_loss_weight * balance loss)`` of the layers that ran.

    For models in ``'loss'`` mode: each layer's loss of its last training
    forward, taken once (a second call returns None until the layers run
    again). None when no layer kept a loss.

    Raises:
        RuntimeError: a layer with a trainable router ran without autograd
            (e.g. reentrant gradient checkpointing), so its loss cannot
            train it.
    """
    total = None
    for name, layer in rmoe_layers(model):
        loss = layer.pop_kept_balance_loss()
        if loss is None:
            continue
        router_trains = any(p.requires_grad for p in layer.router.parameters())
        if router_trains and not loss.requires_grad and \
                torch.is_grad_enabled():
            raise RuntimeError(
                f'RMoE layer {name!r} ran its training forward without '
                'autograd (reentrant gradient checkpointing, or no_grad), so '
                'its balance loss cannot reach the router as a loss term; '
                'use the injected-gradient mode or non-reentrant checkpoints')
        term = layer.balance_loss_weight * loss
        total = term if total is None else total + term
    return total
