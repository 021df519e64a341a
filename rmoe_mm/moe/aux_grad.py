"""Train an auxiliary loss from inside a layer's backward pass.

:func:`inject_aux_grad` returns its input unchanged and, when the backward
pass goes through it, also hands a fixed gradient to an auxiliary loss. A
layer that applies it to its output trains that loss (e.g. an MoE balance
loss) with no change to the model that holds the layer: the caller never
sees the loss.

The returned tensor is a view of the input; feed it to an op that does not
modify it in place.
"""
import torch
from torch import Tensor


class _InjectAuxGrad(torch.autograd.Function):
    """Identity on ``x``; ``aux_loss`` gets the gradient ``grad`` in backward.
    """

    @staticmethod
    def forward(ctx, x: Tensor, aux_loss: Tensor, grad: float) -> Tensor:
        ctx.grad = grad
        ctx.aux_shape, ctx.aux_dtype = aux_loss.shape, aux_loss.dtype
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_x: Tensor):
        grad_aux = grad_x.new_full(
            ctx.aux_shape, ctx.grad, dtype=ctx.aux_dtype)
        return grad_x, grad_aux, None


def inject_aux_grad(x: Tensor, aux_loss: Tensor, grad: float) -> Tensor:
    """``x``, whose backward also gives ``aux_loss`` the gradient ``grad``.

    ``grad`` is d(total loss)/d(aux_loss): the loss weight times whatever
    factor the caller's loss is backpropagated with (AMP loss scale, gradient
    accumulation). It is added once per backward through the returned
    tensor, so gradient checkpointing's second forward does not add it
    twice.

    Args:
        x (Tensor): The tensor the backward pass goes through.
        aux_loss (Tensor): Auxiliary loss in the autograd graph.
        grad (float): The gradient it receives.
    """
    return _InjectAuxGrad.apply(x, aux_loss, float(grad))
