"""Group token choices by expert, enforce a capacity, and combine back.

Pure tensor code, no per-token loop and no dense ``[S, E, C]`` one-hot: the
``N * k`` (token, choice) assignments are stably sorted by expert, so each
expert's tokens form one contiguous slice of a gathered ``[A, C]`` buffer
that one matmul per expert consumes (see :mod:`.experts`).

Data only ever moves by gathers (``index_select``), in both directions and in
both passes: sorted rows gather their token, and a token gathers its (at most
k) rows through ``slot_position``. The scatter-add a naive backward would use
(``index_add_``) was ~10x slower than a gather on a loaded 2-thread CPU.
"""
import math
from typing import List, NamedTuple, Optional

import torch
from torch import Tensor


class DispatchPlan(NamedTuple):
    """Where each kept assignment comes from and goes to."""

    #: ``[A]`` long: token of each kept assignment, grouped by expert.
    token_index: Tensor
    #: ``[A]`` long: which of the token's k choices it is (0 = best).
    choice_index: Tensor
    #: Kept assignments per expert (a Python list, the slice sizes).
    counts: List[int]
    #: ``[E]`` long: assignments routed to each expert before the capacity.
    requested: Tensor
    #: Assignments that overflowed an expert's capacity.
    num_dropped: Tensor
    #: ``[k, N]`` long: row of choice j of token n in the sorted buffer, -1
    #: where that assignment was dropped.
    slot_position: Tensor

    @property
    def dropless(self) -> bool:
        """Whether every assignment was kept."""
        return sum(self.counts) == self.slot_position.numel()


def expert_capacity(num_tokens: int, num_experts: int, top_k: int,
                    capacity_factor: Optional[float]) -> Optional[int]:
    """Slots per expert: ``ceil(capacity_factor * k * N / E)``; None: dropless.

    ``capacity_factor`` None or 0 means dropless (every assignment is kept).
    """
    if not capacity_factor:
        return None
    return math.ceil(capacity_factor * top_k * num_tokens / num_experts)


def plan_dispatch(expert_index: Tensor,
                  num_experts: int,
                  capacity: Optional[int] = None) -> DispatchPlan:
    """Sort the assignments of ``expert_index [N, k]`` by expert.

    Assignments are ranked choice-major (every token's first choice before any
    second choice, then token order), as in GShard and Tutel, so that with a
    capacity the second choices are the first to overflow. Within an expert
    the kept assignments keep that order.

    Args:
        expert_index (Tensor): ``[N, k]`` long, the experts of each token.
        num_experts (int): Number of experts E.
        capacity (int, optional): Kept assignments per expert at most;
            None keeps all (dropless).
    """
    num_tokens, top_k = expert_index.shape
    flat = expert_index.t().reshape(-1)  # choice-major assignment order
    order = torch.argsort(flat, stable=True)
    requested = torch.bincount(flat, minlength=num_experts)
    if capacity is None:
        kept = requested
        num_dropped = requested.new_zeros(())
    else:
        starts = requested.cumsum(0) - requested
        rank_in_expert = torch.arange(
            order.numel(), device=order.device) - starts[flat[order]]
        order = order[rank_in_expert < capacity]
        kept = requested.clamp(max=capacity)
        num_dropped = requested.sum() - kept.sum()
    slot_position = torch.full_like(flat, -1)
    slot_position[order] = torch.arange(order.numel(), device=order.device)
    return DispatchPlan(
        token_index=order % max(num_tokens, 1),
        choice_index=torch.div(
            order, max(num_tokens, 1), rounding_mode='floor'),
        counts=kept.tolist(),
        requested=requested,
        num_dropped=num_dropped,
        slot_position=slot_position.view(top_k, num_tokens))


def sum_slots(rows: Tensor, slot_position: Tensor, dropless: bool) -> Tensor:
    """``[N, C]``: for each token, the sum of its kept rows of ``rows [A, C]``.

    Tokens whose assignments were all dropped get 0. One gather per choice.
    """
    top_k, num_tokens = slot_position.shape
    if rows.shape[0] == 0:
        return rows.new_zeros(num_tokens, rows.shape[1])
    out = None
    for position in slot_position:
        if dropless:
            part = rows.index_select(0, position)
        else:
            part = rows.index_select(0, position.clamp(min=0))
            part = part * (position >= 0).to(part.dtype)[:, None]
        out = part if out is None else out + part
    return out


class _GatherRows(torch.autograd.Function):
    """``tokens[token_index]``, whose backward gathers too (no index_add)."""

    @staticmethod
    def forward(ctx, tokens: Tensor, token_index: Tensor,
                slot_position: Tensor, dropless: bool) -> Tensor:
        ctx.save_for_backward(slot_position)
        ctx.dropless = dropless
        return tokens.index_select(0, token_index)

    @staticmethod
    def backward(ctx, grad_rows: Tensor):
        slot_position, = ctx.saved_tensors
        return (sum_slots(grad_rows.contiguous(), slot_position,
                          ctx.dropless), None, None, None)


def gather_rows(tokens: Tensor, plan: DispatchPlan) -> Tensor:
    """``[A, C]``: the token of each kept assignment, sorted by expert."""
    return _GatherRows.apply(tokens, plan.token_index, plan.slot_position,
                             plan.dropless)


class _Combine(torch.autograd.Function):
    """Sum expert outputs back per token; see :func:`combine`."""

    @staticmethod
    def forward(ctx, expert_out: Tensor, gates: Tensor, token_index: Tensor,
                slot_position: Tensor, dropless: bool,
                weighted: bool) -> Tensor:
        ctx.save_for_backward(expert_out, gates, token_index)
        if weighted:
            expert_out = expert_out * gates.to(expert_out.dtype)[:, None]
        return sum_slots(expert_out, slot_position, dropless)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        expert_out, gates, token_index = ctx.saved_tensors
        grad_rows = grad_out.index_select(0, token_index)
        grad_expert = grad_gates = None
        if ctx.needs_input_grad[0]:
            grad_expert = grad_rows * gates.to(grad_rows.dtype)[:, None]
        if ctx.needs_input_grad[1]:
            grad_gates = (grad_rows.to(gates.dtype) *
                          expert_out.to(gates.dtype)).sum(-1)
        return grad_expert, grad_gates, None, None, None, None


def combine(expert_out: Tensor,
            gates: Tensor,
            plan: DispatchPlan,
            alignment: str = 'stopgrad') -> Tensor:
    """Per-token sum of the expert outputs of its kept assignments.

    ``weighted``: ``y = sum_i g_i E_i(x)``.
    ``stopgrad`` (RMoE): ``y = sum_i StopGrad((1 - g_i) E_i(x)) + g_i E_i(x)``,
    whose value is the unweighted ``sum_i E_i(x)`` (exactly, no rounding) and
    whose gradient is the weighted one's: ``g_i dy`` to the expert,
    ``E_i(x).dy`` to the gate. Tokens with no kept assignment get 0.

    Args:
        expert_out (Tensor): ``[A, C]`` expert outputs, one row per kept
            assignment, in the order of ``plan``.
        gates (Tensor): ``[A]`` gate value of each kept assignment.
        plan (DispatchPlan): the dispatch that produced the rows.
        alignment (str): ``'stopgrad'`` or ``'weighted'``.
    """
    return _Combine.apply(expert_out, gates, plan.token_index,
                          plan.slot_position, plan.dropless,
                          alignment == 'weighted')
