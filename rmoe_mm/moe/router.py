"""Top-k routers (linear softmax, cosine) and the MoE balance losses.

A router maps tokens ``[N, C]`` to the experts each token visits
(``expert_index [N, k]``), the gate values of those choices (``gates [N, k]``,
differentiable) and the softmax over all experts (``probs [N, E]``) that the
balance loss and the statistics use.

NOTE: routing runs in fp32 (fp64 for fp64 input) with autocast off. Top-k
selection on bf16 logits flips between near-tied experts from one precision
to the next, and the softmax / balance loss are cheap ([N, E]); Tutel and
DeepSpeed do the same.
"""
import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ROUTER_TYPES = ('linear', 'cosine')
BALANCE_LOSSES = ('importance', 'load', 'none')


class Routing(NamedTuple):
    """What a router decides for one batch of tokens."""

    #: ``[N, k]`` long: the experts each token visits, best first.
    expert_index: Tensor
    #: ``[N, k]`` gate value of each choice (differentiable, fp32 or wider).
    gates: Tensor
    #: ``[N, E]`` softmax over all experts (noise included in training).
    probs: Tensor


def importance_loss(probs: Tensor) -> Tensor:
    """Squared coefficient of variation of expert importance (Shazeer et al.).

    ``Imp_i = sum_n probs[n, i]`` and the loss is ``var(Imp) / mean(Imp)^2``
    with the unbiased variance, as in Tutel (Swin-MoE), so that Swin-MoE's
    weight of 0.01 keeps its meaning. It is 0 for perfectly even importance
    and for a single expert.

    Args:
        probs (Tensor): ``[N, E]`` softmax over experts.
    """
    num_experts = probs.shape[-1]
    if num_experts < 2 or probs.shape[0] == 0:
        return probs.sum() * 0.
    importance = probs.sum(0)
    return importance.var() / (importance.mean()**2 + 1e-10)


def load_loss(probs: Tensor, expert_index: Tensor) -> Tensor:
    """Switch / GShard load-balancing loss ``E * sum_i f_i * P_i``.

    ``f_i`` is the fraction of tokens whose first choice is expert ``i`` (not
    differentiable) and ``P_i`` the mean router probability of expert ``i``.
    It is 1 for a perfectly even router and ``E`` when one expert takes all.

    Args:
        probs (Tensor): ``[N, E]`` softmax over experts.
        expert_index (Tensor): ``[N, k]`` chosen experts, best first.
    """
    num_tokens, num_experts = probs.shape
    if num_tokens == 0:
        return probs.sum() * 0.
    first_choice = torch.bincount(expert_index[:, 0], minlength=num_experts)
    fraction = first_choice.to(probs.dtype) / num_tokens
    return num_experts * (fraction * probs.mean(0)).sum()


def balance_loss(kind: str, routing: Routing) -> Tensor:
    """The balance loss named ``kind`` (one of :data:`BALANCE_LOSSES`)."""
    if kind == 'importance':
        return importance_loss(routing.probs)
    if kind == 'load':
        return load_loss(routing.probs, routing.expert_index)
    if kind == 'none':
        return routing.probs.sum() * 0.
    raise ValueError(f'balance_loss must be one of {BALANCE_LOSSES}, got '
                     f'{kind!r}')


class TopKRouter(nn.Module):
    """Noisy top-k softmax router with a linear or a cosine gate.

    ``linear``: ``logits = x W`` (bias-free, as Swin-MoE's linear gate).
    ``cosine``: Swin-MoE's cosine gate, ``logits = cos(P x, M) / tau`` with a
    256-d projection ``P``, expert embeddings ``M`` and a learned temperature
    ``tau`` (init 0.5, clamped at 0.01).

    In training, Gaussian noise of std ``gate_noise`` is added to the logits
    before the softmax; the noisy softmax picks the experts and gives the gate
    values (Tutel and V-MoE do the same). For ``top_k > 1`` the selected gates
    are renormalised to sum to 1 (Tutel's default), for ``top_k == 1`` the gate
    is the plain softmax probability, so that it can carry a gradient.

    Args:
        embed_dims (int): Token channels C.
        num_experts (int): Number of experts E.
        top_k (int): Experts per token. Default: 1.
        router_type (str): ``'linear'`` or ``'cosine'``. Default: ``'linear'``.
        gate_noise (float): Std of the logit noise in training; 0 disables it.
            Default: ``1 / num_experts`` (see :class:`RMoEFFN`).
        cosine_proj_dims (int): Projection width of the cosine router.
            Default: 256.
    """

    def __init__(self,
                 embed_dims: int,
                 num_experts: int,
                 top_k: int = 1,
                 router_type: str = 'linear',
                 gate_noise: Optional[float] = None,
                 cosine_proj_dims: int = 256):
        super().__init__()
        if router_type not in ROUTER_TYPES:
            raise ValueError(f'router must be one of {ROUTER_TYPES}, got '
                             f'{router_type!r}')
        self.num_experts = num_experts
        self.top_k = top_k
        self.router_type = router_type
        self.gate_noise = (1. /
                           num_experts if gate_noise is None else gate_noise)
        if router_type == 'linear':
            self.gate = nn.Linear(embed_dims, num_experts, bias=False)
            nn.init.trunc_normal_(self.gate.weight, std=0.02)
        else:
            self.projector = nn.Linear(embed_dims, cosine_proj_dims)
            self.sim_matrix = nn.Parameter(
                torch.empty(cosine_proj_dims, num_experts).normal_(0, 0.01))
            self.temperature = nn.Parameter(torch.full([1], math.log(1 / 0.5)))
            self.register_buffer(
                'temperature_max',
                torch.tensor(math.log(1 / 0.01)),
                persistent=False)

    def extra_repr(self) -> str:
        return (f'type={self.router_type}, num_experts={self.num_experts}, '
                f'top_k={self.top_k}, gate_noise={self.gate_noise:g}')

    def logits(self, x: Tensor) -> Tensor:
        """Noise-free logits ``[N, E]`` of tokens ``x [N, C]`` (>= fp32)."""
        return self._expert_major_logits(x).t()

    def _expert_major_logits(self, x: Tensor) -> Tensor:
        # [E, N]: a short, wide GEMM, and softmax / top-k over the leading dim
        # of size E, are several times faster on CPU than the [N, E] layout
        # (a skinny GEMM and a reduction over a last dim of 8).
        dtype = torch.promote_types(x.dtype, torch.float32)
        x = x.to(dtype)
        if self.router_type == 'linear':
            return self.gate.weight.to(dtype) @ x.t()
        projected = F.normalize(
            F.linear(x, self.projector.weight.to(dtype),
                     self.projector.bias.to(dtype)),
            dim=-1)
        experts = F.normalize(self.sim_matrix.to(dtype), dim=0)
        logits = experts.t() @ projected.t()
        return logits * self.temperature.clamp(max=self.temperature_max).exp()

    def forward(self, x: Tensor) -> Routing:
        """Route tokens ``x [N, C]``."""
        with torch.autocast(x.device.type, enabled=False):
            logits = self._expert_major_logits(x)
            if self.training and self.gate_noise > 0:
                logits = logits + torch.randn_like(logits) * self.gate_noise
            probs = logits.softmax(dim=0)
            gates, expert_index = probs.topk(self.top_k, dim=0)
            if self.top_k > 1:
                gates = gates / gates.sum(0, keepdim=True)
        return Routing(expert_index.t(), gates.t(), probs.t())
