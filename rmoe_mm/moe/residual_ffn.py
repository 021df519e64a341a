"""RMoE FFN: a dense FFN's core plus per-expert residuals, behind a top-k router.

Expert ``i`` computes the dense FFN with weights ``theta_0 + theta_i^r``. The
core ``theta_0`` keeps mmcv ``FFN``'s parameter names (``layers.0.0`` = fc1,
``layers.1`` = fc2), so a dense checkpoint loads into it unchanged; residuals
live under ``residual.`` and the router under ``router.``.

The balance loss trains the router without any change to the segmentor or
detector: the op that combines the expert outputs (:func:`.dispatch.combine`)
also adds, in the backward pass, ``weight * scale`` as the gradient of the
layer's balance loss. ``scale`` is the global :func:`set_aux_grad_scale` value, which
must follow the factor the optimizer wrapper applies to the main loss (AMP's
dynamic loss scale, divided by the gradient accumulation count); see
:func:`aux_grad_scale_from_optim_wrapper`.
"""
import copy
import difflib
from contextlib import contextmanager
from typing import Dict, Optional, Sequence

import torch
from mmcv.cnn import build_activation_layer
from mmcv.cnn.bricks.drop import build_dropout
from mmcv.cnn.bricks.scale import LayerScale
from mmengine.model import BaseModule, Sequential
from torch import Tensor, nn

from rmoe_mm.registry import MODELS
from .dispatch import combine, expert_capacity, gather_rows, plan_dispatch
from .experts import ExpertResiduals
from .router import BALANCE_LOSSES, ROUTER_TYPES, TopKRouter, balance_loss

ALIGNMENTS = ('stopgrad', 'weighted')

#: Default std of the residual weights at init; see :class:`RMoEFFN`.
DEFAULT_RESIDUAL_STD = 1e-4

_aux_grad_scale = 1.0


def set_aux_grad_scale(scale: float) -> None:
    """Set the factor applied to every balance-loss gradient injected in backward.

    The main loss reaches ``backward`` multiplied by the optimizer wrapper's
    factors (``AmpOptimWrapper``: the dynamic loss scale; gradient
    accumulation: ``1 / accumulative_counts``). Call this before each
    iteration's backward with the same factor, e.g. from a hook's
    ``before_train_iter``:
    ``set_aux_grad_scale(aux_grad_scale_from_optim_wrapper(runner.optim_wrapper))``.
    """
    global _aux_grad_scale
    _aux_grad_scale = float(scale)


def get_aux_grad_scale() -> float:
    """The factor set by :func:`set_aux_grad_scale` (1.0 by default)."""
    return _aux_grad_scale


@contextmanager
def aux_grad_scale(scale: float):
    """Temporarily set the balance-loss gradient factor."""
    previous = get_aux_grad_scale()
    set_aux_grad_scale(scale)
    try:
        yield
    finally:
        set_aux_grad_scale(previous)


def aux_grad_scale_from_optim_wrapper(optim_wrapper) -> float:
    """The factor mmengine's optimizer wrapper applies to the next loss it backprops.

    ``AmpOptimWrapper`` multiplies the loss by ``loss_scaler.get_scale()``
    (when its ``GradScaler`` is enabled); every ``OptimWrapper`` divides it by
    the accumulation factor of ``OptimWrapper.scale_loss``:
    ``accumulative_counts``, or the remainder for the last, incomplete window
    of training. Call it before the iteration's backward (``before_train_iter``).
    """
    scale = 1.0
    scaler = getattr(optim_wrapper, 'loss_scaler', None)
    if scaler is not None and getattr(scaler, 'is_enabled', lambda: True)():
        scale = float(scaler.get_scale())
    counts = getattr(optim_wrapper, '_accumulative_counts', 1)
    if counts > 1:
        remainder = getattr(optim_wrapper, '_remainder_counts', -1)
        max_counts = getattr(optim_wrapper, '_max_counts', -1)
        inner = getattr(optim_wrapper, '_inner_count', 0)
        if remainder > 0 and max_counts > 0 and inner >= max_counts - remainder:
            counts = remainder
    return scale / counts


_SETTINGS = ('num_experts', 'top_k', 'router', 'gate_noise', 'capacity_factor',
             'balance_loss', 'balance_loss_weight', 'residual_std',
             'alignment', 'residual_rank')


def _check_number(name, value, low, integer=False, allow_none=False):
    if value is None and allow_none:
        return
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f'{name} must be {"an int" if integer else "a number"}'
                        f'{" or None" if allow_none else ""}, got {value!r}')
    if value < low:
        raise ValueError(f'{name} must be >= {low}, got {value!r}')


@MODELS.register_module()
class RMoEFFN(BaseModule):
    """Residual-MoE drop-in for mmcv's ``FFN`` (fc1 -> act -> fc2).

    Every token visits its ``top_k`` experts; expert ``i`` is the dense FFN
    with weights ``core + residual_i``. With ``alignment='stopgrad'`` the
    output value is the unweighted sum of the selected experts' outputs (the
    dense FFN exactly for top-1 and zero residuals) while the gradient still
    reaches the gate.

    Defaults, and why:
        - ``gate_noise=None`` means ``1 / num_experts``: Swin-MoE's
          ``gate_noise=1.0`` is scaled by ``1 / E`` in Tutel, and V-MoE uses
          ``1 / E``; both land on the same std.
        - ``residual_std=1e-4``: the paper starts experts as copies of the
          dense FFN plus small noise. On Swin-T's stage-3/4 FFN shapes with
          std-0.02 weights, noise of 1e-4 moves an expert's output by 0.7%
          (relative L2; 1e-3: 7%, 1e-2: 77%), so the converted model starts
          where the dense one was while no two experts are identical. The
          experts mostly diverge through routing anyway: each one is trained
          on its own tokens (sparse upcycling uses exact copies).
        - dropless routing (``capacity_factor=None``): no token is skipped.

    Gradients: with ``stopgrad`` an expert receives ``g_i dy`` and the gate
    ``E_i(x).dy``, exactly as with ``weighted``; only the forward value
    differs. The balance loss needs no caller change: its gradient,
    ``balance_loss_weight * get_aux_grad_scale()``, is added when the
    backward pass goes through this layer's output (once, also under
    gradient checkpointing). With ``AmpOptimWrapper`` or gradient
    accumulation, set that scale each iteration (see
    :func:`aux_grad_scale_from_optim_wrapper`; ``RMoEStageHook`` does).

    Args:
        embed_dims (int): Input/output channels C.
        feedforward_channels (int): Hidden channels H.
        num_fcs (int): Linear layers; only 2 (fc1, fc2) is supported.
        act_cfg (dict): Activation config. Default: ReLU.
        ffn_drop (float): Dropout after the activation and after fc2.
        dropout_layer (dict, optional): Dropout (e.g. DropPath) on the FFN
            output before the identity is added.
        add_identity (bool): Add the identity (``x`` or ``identity``).
        init_cfg (dict, optional): mmengine init config.
        layer_scale_init_value (float): LayerScale on the output if > 0, as
            in mmcv's ``FFN``. Default: 0 (none).
        num_experts (int): Experts E (>= 1). Default: 8.
        top_k (int): Experts per token, 1 <= k <= E. Default: 1.
        router (str): ``'linear'`` (softmax of a linear gate) or ``'cosine'``
            (Swin-MoE's cosine gate). Default: ``'linear'``.
        gate_noise (float, optional): Std of the logit noise in training.
            Default: None = ``1 / num_experts``.
        capacity_factor (float, optional): None or 0: dropless. > 0: each
            expert takes at most ``ceil(capacity_factor * k * N / E)`` of the
            N tokens' assignments; overflowing ones add 0 to the FFN output
            (the token passes through the identity only) and are counted.
        balance_loss (str): ``'importance'`` (the paper's CV^2), ``'load'``
            (Switch/GShard) or ``'none'``. Default: ``'importance'``.
        balance_loss_weight (float): Its weight. Default: 0.01 (Swin-MoE).
        residual_std (float): Init std of the residual weights (0 allowed).
        alignment (str): ``'stopgrad'`` (the paper's) or ``'weighted'``
            (``y = sum_i g_i E_i(x)``). Default: ``'stopgrad'``.
        residual_rank (int, optional): Low-rank residual ``A_i B_i`` of this
            rank; None = full-size residuals. Default: None.
    """

    def __init__(self,
                 embed_dims: int,
                 feedforward_channels: int,
                 num_fcs: int = 2,
                 act_cfg: dict = dict(type='ReLU', inplace=True),
                 ffn_drop: float = 0.,
                 dropout_layer: Optional[dict] = None,
                 add_identity: bool = True,
                 init_cfg: Optional[dict] = None,
                 layer_scale_init_value: float = 0.,
                 *,
                 num_experts: int = 8,
                 top_k: int = 1,
                 router: str = 'linear',
                 gate_noise: Optional[float] = None,
                 capacity_factor: Optional[float] = None,
                 balance_loss: str = 'importance',
                 balance_loss_weight: float = 0.01,
                 residual_std: float = DEFAULT_RESIDUAL_STD,
                 alignment: str = 'stopgrad',
                 residual_rank: Optional[int] = None):
        super().__init__(init_cfg)
        if num_fcs != 2:
            raise ValueError(f'RMoEFFN supports num_fcs=2 (fc1, fc2) only, got '
                             f'num_fcs={num_fcs}')
        _check_number('embed_dims', embed_dims, 1, integer=True)
        _check_number('feedforward_channels', feedforward_channels, 1,
                      integer=True)
        _check_number('num_experts', num_experts, 1, integer=True)
        _check_number('top_k', top_k, 1, integer=True)
        if top_k > num_experts:
            raise ValueError(f'top_k={top_k} exceeds num_experts={num_experts}; '
                             'a token cannot visit more experts than exist')
        if router not in ROUTER_TYPES:
            raise ValueError(f'router must be one of {ROUTER_TYPES}, got '
                             f'{router!r}')
        _check_number('gate_noise', gate_noise, 0, allow_none=True)
        _check_number('capacity_factor', capacity_factor, 0, allow_none=True)
        if balance_loss is None:
            balance_loss = 'none'
        if balance_loss not in BALANCE_LOSSES:
            raise ValueError(f'balance_loss must be one of {BALANCE_LOSSES}, '
                             f'got {balance_loss!r}')
        _check_number('balance_loss_weight', balance_loss_weight, 0)
        _check_number('residual_std', residual_std, 0)
        if alignment not in ALIGNMENTS:
            raise ValueError(f'alignment must be one of {ALIGNMENTS}, got '
                             f'{alignment!r}')
        _check_number('residual_rank', residual_rank, 1, integer=True,
                      allow_none=True)
        if residual_rank is not None and residual_rank >= min(
                embed_dims, feedforward_channels):
            raise ValueError(
                f'residual_rank={residual_rank} is not low-rank for '
                f'{feedforward_channels}x{embed_dims} weights; use '
                f'residual_rank=None for full-size residuals')

        self.embed_dims = embed_dims
        self.feedforward_channels = feedforward_channels
        self.num_fcs = num_fcs
        self.num_experts = num_experts
        self.top_k = top_k
        self.capacity_factor = capacity_factor
        self.balance_loss = balance_loss
        self.balance_loss_weight = float(balance_loss_weight)
        self.alignment = alignment

        # The core: mmcv FFN's exact module layout, hence its state-dict keys.
        self.layers = Sequential(
            Sequential(
                nn.Linear(embed_dims, feedforward_channels),
                build_activation_layer(act_cfg), nn.Dropout(ffn_drop)),
            nn.Linear(feedforward_channels, embed_dims), nn.Dropout(ffn_drop))
        self.dropout_layer = build_dropout(
            dropout_layer) if dropout_layer else nn.Identity()
        self.add_identity = add_identity
        self.gamma2 = LayerScale(embed_dims, scale=layer_scale_init_value) \
            if layer_scale_init_value > 0 else nn.Identity()

        self.residual = ExpertResiduals(num_experts, embed_dims,
                                        feedforward_channels, residual_rank,
                                        residual_std)
        self.router = TopKRouter(embed_dims, num_experts, top_k, router,
                                 gate_noise)
        self._stats: Dict[str, Tensor] = {}

    @classmethod
    def from_dense(cls, ffn: nn.Module, **moe_cfg) -> 'RMoEFFN':
        """An RMoE FFN whose core is a copy of the dense mmcv ``FFN`` ``ffn``.

        Dims, activation, dropouts, identity and LayerScale are taken from
        ``ffn``; ``moe_cfg`` holds the MoE settings (``num_experts``, ...).
        The result is on ``ffn``'s device and dtype and in its train/eval mode.
        """
        unknown = sorted(set(moe_cfg) - set(_SETTINGS))
        if unknown:
            hints = []
            for name in unknown:
                close = difflib.get_close_matches(name, _SETTINGS, n=1)
                hints.append(f'{name!r}' + (f' (did you mean {close[0]!r}?)'
                                            if close else ''))
            raise ValueError(f'unknown RMoE setting(s): {", ".join(hints)}; '
                             f'valid settings are {", ".join(_SETTINGS)}')
        layers = getattr(ffn, 'layers', None)
        if (getattr(ffn, 'num_fcs', None) != 2 or layers is None
                or len(layers) != 3 or not isinstance(layers[1], nn.Linear)):
            raise ValueError(
                'from_dense expects an mmcv FFN with num_fcs=2 (layers.0 = '
                f'Sequential(fc1, act, dropout), layers.1 = fc2), got '
                f'{type(ffn).__name__}')
        fc1, activation, dropout = layers[0]
        moe = cls(
            ffn.embed_dims,
            ffn.feedforward_channels,
            ffn_drop=dropout.p,
            add_identity=ffn.add_identity,
            **moe_cfg)
        moe.layers[0][1] = copy.deepcopy(activation)
        moe.dropout_layer = copy.deepcopy(ffn.dropout_layer)
        moe.gamma2 = copy.deepcopy(ffn.gamma2)
        moe.layers.load_state_dict(layers.state_dict())
        weight = fc1.weight
        return moe.to(device=weight.device, dtype=weight.dtype).train(
            ffn.training)

    def forward(self, x: Tensor, identity: Optional[Tensor] = None) -> Tensor:
        """Like mmcv ``FFN.forward``: ``identity + FFN(x)`` for x ``[..., C]``."""
        tokens = x.reshape(-1, self.embed_dims)
        num_tokens = tokens.shape[0]
        routing = self.router(tokens)
        plan = plan_dispatch(
            routing.expert_index, self.num_experts,
            expert_capacity(num_tokens, self.num_experts, self.top_k,
                            self.capacity_factor))
        rows = gather_rows(tokens, plan)
        gates = routing.gates[plan.token_index, plan.choice_index]

        aux_loss, aux_grad = None, 0.
        if self.training:
            aux_loss = balance_loss(self.balance_loss, routing)
            if self.balance_loss_weight > 0 and aux_loss.requires_grad:
                aux_grad = self.balance_loss_weight * get_aux_grad_scale()
        self._record_stats(routing, plan, aux_loss)

        rows = self.experts(rows, plan.counts)
        out = combine(rows, gates, plan, self.alignment,
                      aux_loss if aux_grad else None, aux_grad).view(x.shape)
        out = self.dropout_layer(self.gamma2(out))
        if not self.add_identity:
            return out
        return (x if identity is None else identity) + out

    def experts(self, rows: Tensor, counts: Sequence[int]) -> Tensor:
        """Expert ``e``'s FFN (core + residual ``e``) on its slice of rows.

        Args:
            rows (Tensor): ``[A, C]`` token rows sorted by expert.
            counts (Sequence[int]): Rows of each expert, in expert order.

        Returns:
            Tensor: ``[A, C]``, the expert outputs in the same order.
        """
        fc1, activation, drop1 = self.layers[0]
        fc2, drop2 = self.layers[1], self.layers[2]
        hidden = drop1(activation(self.residual.fc1(rows, counts, fc1)))
        return drop2(self.residual.fc2(hidden, counts, fc2))

    @torch.no_grad()
    def _record_stats(self, routing, plan, aux_loss) -> None:
        # A snapshot of the last forward, overwritten (never accumulated), so
        # the second forward of gradient checkpointing does not count twice.
        probs = routing.probs
        entropy = -(probs * probs.clamp_min(1e-20).log()).sum(-1).mean() \
            if probs.shape[0] else probs.new_zeros(())
        self._stats = dict(
            tokens_per_expert=plan.requested.detach(),
            dropped=plan.num_dropped.detach(),
            num_tokens=torch.tensor(probs.shape[0]),
            router_entropy=entropy.detach(),
        )
        if aux_loss is not None:
            self._stats['balance_loss'] = aux_loss.detach()

    def moe_stats(self) -> Dict[str, object]:
        """Statistics of the last forward as Python numbers.

        ``tokens_per_expert``: assignments routed to each expert (before the
        capacity); ``dropped``: assignments over capacity; ``num_tokens``;
        ``router_entropy``: mean entropy of the router softmax (nats);
        ``balance_loss``: unweighted balance loss (training forwards only).
        Empty before the first forward.
        """
        stats = {}
        for key, value in self._stats.items():
            stats[key] = value.tolist() if value.dim() else value.item()
        return stats

    def extra_repr(self) -> str:
        return (f'num_experts={self.num_experts}, top_k={self.top_k}, '
                f'capacity_factor={self.capacity_factor}, '
                f'alignment={self.alignment}, balance_loss={self.balance_loss}'
                f'(weight={self.balance_loss_weight:g})')
