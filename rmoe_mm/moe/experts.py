"""Residual expert weights and the grouped matmul that applies them.

Expert ``e`` of a linear layer uses ``W_e = W_core + R_e`` and
``b_e = b_core + r_e``. The residuals of all experts are stored batched
(``[E, out, in]``; ``A_e B_e`` with ``A [E, out, r]``, ``B [E, r, in]`` for a
low-rank residual), and :func:`grouped_linear` applies expert ``e`` to its
contiguous slice of the expert-sorted token rows.
"""
import math
from typing import Optional, Sequence

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
        """Residual weights ``[E, out, in]`` of ``fc`` (``'fc1'``/``'fc2'``).

        For a low-rank residual this materialises ``A_e B_e``; the forward
        pass never does (see :func:`grouped_low_rank_linear`).
        """
        if self.rank is None:
            return getattr(self, f'{fc}_weight')
        return torch.bmm(getattr(self, f'{fc}_weight_a'),
                         getattr(self, f'{fc}_weight_b'))

    def bias(self, fc: str) -> Tensor:
        """Residual biases ``[E, out]`` of ``fc``."""
        return getattr(self, f'{fc}_bias')

    def apply_fc(self, fc: str, rows: Tensor, counts: Sequence[int],
                 core: nn.Linear) -> Tensor:
        """Expert ``e``'s ``fc`` (core + residual ``e``) on its slice of rows."""
        if self.rank is None:
            return grouped_linear(rows, counts, core.weight, core.bias,
                                  getattr(self, f'{fc}_weight'),
                                  self.bias(fc))
        return grouped_low_rank_linear(rows, counts, core.weight, core.bias,
                                       getattr(self, f'{fc}_weight_a'),
                                       getattr(self, f'{fc}_weight_b'),
                                       self.bias(fc))


def _compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype a linear layer would run in here (autocast's, if it is on)."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


class _GroupedLinear(torch.autograd.Function):
    """Expert ``e`` applies ``W_core + R_e`` to its slice of the sorted rows.

    One matmul per expert, written straight into its slice of the output.
    ``W_core + R_e`` is built in a single ``[out, in]`` scratch buffer that is
    reused by every expert (cache-resident, never ``E`` copies), and rebuilt
    in backward instead of being kept. The residual weight gradient of expert
    ``e`` is written straight into row ``e`` of one ``[E, out, in]`` tensor,
    whose sum over experts is the core's gradient (skipped when the core is
    frozen). Under autocast the sum ``W_core + R_e`` is taken in the weights'
    dtype and rounded once to the autocast dtype, as a ``Linear`` would.
    """

    @staticmethod
    def forward(ctx, rows, counts, core_weight, core_bias, residual_weight,
                residual_bias):
        dtype = _compute_dtype(rows)
        with torch.autocast(rows.device.type, enabled=False):
            rows = rows.to(dtype).contiguous()
            out = rows.new_empty(rows.shape[0], core_weight.shape[0])
            biases = (core_bias + residual_bias).to(dtype)
            weight = torch.empty_like(core_weight, dtype=dtype)
            end = 0
            for expert, count in enumerate(counts):
                start, end = end, end + count
                if count:
                    torch.add(core_weight, residual_weight[expert], out=weight)
                    torch.addmm(biases[expert], rows[start:end], weight.t(),
                                out=out[start:end])
        ctx.counts = counts
        ctx.save_for_backward(rows, core_weight, residual_weight)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        rows, core_weight, residual_weight = ctx.saved_tensors
        (need_rows, _, need_core_weight, need_core_bias, need_residual_weight,
         need_residual_bias) = ctx.needs_input_grad
        need_weight = need_core_weight or need_residual_weight
        counts = ctx.counts
        with torch.autocast(rows.device.type, enabled=False):
            grad_out = grad_out.to(rows.dtype).contiguous()
            grad_rows = torch.empty_like(rows) if need_rows else None
            grad_weight = torch.empty_like(
                residual_weight) if need_weight else None
            grad_bias = None
            if need_core_bias or need_residual_bias:
                expert_of_row = torch.repeat_interleave(
                    torch.arange(len(counts), device=rows.device),
                    torch.tensor(counts, device=rows.device),
                    output_size=rows.shape[0])
                grad_bias = residual_weight.new_zeros(
                    residual_weight.shape[:2])
                grad_bias.index_add_(0, expert_of_row,
                                     grad_out.to(grad_bias.dtype))
            weight = torch.empty_like(core_weight, dtype=rows.dtype)
            # mm cannot write another dtype: bf16 weight grads go via scratch.
            cast = need_weight and rows.dtype != grad_weight.dtype
            grad_scratch = torch.empty_like(weight) if cast else None
            end = 0
            for expert, count in enumerate(counts):
                start, end = end, end + count
                if not count:
                    if need_weight:
                        grad_weight[expert].zero_()
                    continue
                grad_e, rows_e = grad_out[start:end], rows[start:end]
                if need_rows:
                    torch.add(core_weight, residual_weight[expert], out=weight)
                    torch.mm(grad_e, weight, out=grad_rows[start:end])
                if need_weight:
                    if cast:
                        torch.mm(grad_e.t(), rows_e, out=grad_scratch)
                        grad_weight[expert].copy_(grad_scratch)
                    else:
                        torch.mm(grad_e.t(), rows_e, out=grad_weight[expert])
        return (grad_rows, None,
                grad_weight.sum(0) if need_core_weight else None,
                grad_bias.sum(0) if need_core_bias else None,
                grad_weight if need_residual_weight else None,
                grad_bias if need_residual_bias else None)


def grouped_linear(rows: Tensor, counts: Sequence[int], core_weight: Tensor,
                   core_bias: Tensor, residual_weight: Tensor,
                   residual_bias: Tensor) -> Tensor:
    """Apply expert ``e``'s linear layer to its slice of ``rows``.

    Expert ``e`` uses weight ``core_weight + residual_weight[e]`` and bias
    ``core_bias + residual_bias[e]``; the result has the autocast dtype when
    autocast is on, else the dtype of ``rows``.

    Args:
        rows (Tensor): ``[A, in]`` token rows sorted by expert.
        counts (Sequence[int]): rows of each expert, in expert order.
        core_weight (Tensor): ``[out, in]``; core_bias ``[out]``.
        residual_weight (Tensor): ``[E, out, in]``; residual_bias ``[E, out]``.

    Returns:
        Tensor: ``[A, out]``.
    """
    if len(counts) != residual_weight.shape[0] or sum(counts) != rows.shape[0]:
        raise ValueError(f'counts {list(counts)} do not split {rows.shape[0]} '
                         f'rows among {residual_weight.shape[0]} experts')
    return _GroupedLinear.apply(rows, tuple(counts), core_weight, core_bias,
                                residual_weight, residual_bias)


def grouped_low_rank_linear(rows: Tensor, counts: Sequence[int],
                            core_weight: Tensor, core_bias: Tensor,
                            weight_a: Tensor, weight_b: Tensor,
                            residual_bias: Tensor) -> Tensor:
    """:func:`grouped_linear` for a low-rank residual ``A_e B_e``.

    ``x W_core^T`` runs as one matmul over all rows (exactly the dense
    layer's cost) and each expert adds ``(x_e B_e^T) A_e^T``, which costs
    ``r (in + out)`` per row; the ``[E, out, in]`` product is never formed.

    Args:
        rows (Tensor): ``[A, in]`` token rows sorted by expert.
        counts (Sequence[int]): rows of each expert, in expert order.
        core_weight (Tensor): ``[out, in]``; core_bias ``[out]``.
        weight_a (Tensor): ``[E, out, r]``; weight_b ``[E, r, in]``.
        residual_bias (Tensor): ``[E, out]``.
    """
    if len(counts) != weight_a.shape[0] or sum(counts) != rows.shape[0]:
        raise ValueError(f'counts {list(counts)} do not split {rows.shape[0]} '
                         f'rows among {weight_a.shape[0]} experts')
    out = F.linear(rows, core_weight, core_bias)
    expert_of_row = torch.repeat_interleave(
        torch.arange(len(counts), device=rows.device),
        torch.tensor(counts, device=rows.device),
        output_size=rows.shape[0])
    low_rank = torch.cat([
        (chunk @ b.t()) @ a.t() for chunk, a, b in zip(
            rows.split(list(counts)), weight_a.unbind(0), weight_b.unbind(0))
    ])
    return out + low_rank + residual_bias[expert_of_row].to(out.dtype)
