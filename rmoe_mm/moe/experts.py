"""Residual expert weights and the grouped matmul that applies them.

Expert ``e`` of a linear layer uses ``W_e = W_core + R_e`` and
``b_e = b_core + r_e``. The residuals of all experts are stored batched
(``[E, out, in]``; ``A_e B_e`` with ``A [E, out, r]``, ``B [E, r, in]`` for a
low-rank residual), and :func:`grouped_linear` applies expert ``e`` to its
contiguous slice of the expert-sorted token rows.
"""
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ExpertResiduals(nn.Module):
    """Per-expert residuals of an FFN's fc1 and fc2, weights and biases.

    Weights start as Gaussian noise of std ``std`` (0 allowed: every expert
    then equals the core), biases at 0. A low-rank residual ``A_e B_e`` starts
    with ``B ~ N(0, 1/r)`` and ``A ~ N(0, std^2)``, so the product has std
    ``std`` per entry, and ``A`` still gets a gradient when ``std`` is 0.

    Args:
        num_experts (int): Number of experts E.
        embed_dims (int): FFN input/output channels C.
        feedforward_channels (int): FFN hidden channels H.
        rank (int, optional): Rank r of the weight residuals; None = full.
        std (float): Init std of the residual weights.
    """

    def __init__(self,
                 num_experts: int,
                 embed_dims: int,
                 feedforward_channels: int,
                 rank: Optional[int] = None,
                 std: float = 0.):
        super().__init__()
        self.num_experts = num_experts
        self.rank = rank
        self.std = std
        shapes = dict(fc1=(feedforward_channels, embed_dims),
                      fc2=(embed_dims, feedforward_channels))
        for fc, (out_dims, in_dims) in shapes.items():
            if rank is None:
                self.register_parameter(
                    f'{fc}_weight',
                    nn.Parameter(torch.zeros(num_experts, out_dims, in_dims)))
            else:
                self.register_parameter(
                    f'{fc}_weight_a',
                    nn.Parameter(torch.zeros(num_experts, out_dims, rank)))
                self.register_parameter(
                    f'{fc}_weight_b',
                    nn.Parameter(torch.zeros(num_experts, rank, in_dims)))
            self.register_parameter(
                f'{fc}_bias', nn.Parameter(torch.zeros(num_experts, out_dims)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw the residuals (noise of std ``self.std``, zero biases)."""
        with torch.no_grad():
            for fc in ('fc1', 'fc2'):
                getattr(self, f'{fc}_bias').zero_()
                if self.rank is None:
                    getattr(self, f'{fc}_weight').normal_(0, self.std)
                else:
                    getattr(self, f'{fc}_weight_a').normal_(0, self.std)
                    getattr(self, f'{fc}_weight_b').normal_(
                        0, 1 / math.sqrt(self.rank))

    def extra_repr(self) -> str:
        rank = 'full' if self.rank is None else self.rank
        return f'num_experts={self.num_experts}, rank={rank}, std={self.std:g}'

    def weight(self, fc: str) -> Tensor:
        """Residual weights ``[E, out, in]`` of ``fc`` (``'fc1'``/``'fc2'``)."""
        if self.rank is None:
            return getattr(self, f'{fc}_weight')
        return torch.bmm(getattr(self, f'{fc}_weight_a'),
                         getattr(self, f'{fc}_weight_b'))

    def bias(self, fc: str) -> Tensor:
        """Residual biases ``[E, out]`` of ``fc``."""
        return getattr(self, f'{fc}_bias')


def grouped_linear(rows: Tensor, counts: Sequence[int], core_weight: Tensor,
                   core_bias: Tensor, residual_weight: Tensor,
                   residual_bias: Tensor) -> Tensor:
    """Apply expert ``e``'s linear layer to its slice of ``rows``.

    Args:
        rows (Tensor): ``[A, in]`` token rows sorted by expert.
        counts (Sequence[int]): rows of each expert, in expert order.
        core_weight (Tensor): ``[out, in]``; core_bias ``[out]``.
        residual_weight (Tensor): ``[E, out, in]``; residual_bias ``[E, out]``.

    Returns:
        Tensor: ``[A, out]``.
    """
    weights = (core_weight + residual_weight).unbind(0)
    biases = (core_bias + residual_bias).unbind(0)
    outs = [
        F.linear(chunk, weight, bias)
        for chunk, weight, bias in zip(rows.split(list(counts)), weights, biases)
    ]
    return torch.cat(outs)
