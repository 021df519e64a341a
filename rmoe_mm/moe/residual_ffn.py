"""RMoE FFN: a dense FFN plus per-expert residuals, behind a top-k router.

Expert ``i`` computes the dense FFN with weights ``theta_0 + theta_i^r``. The
shared weights ``theta_0`` keep mmcv ``FFN``'s parameter names (``layers.0.0``
= fc1, ``layers.1`` = fc2), so a dense checkpoint loads into them unchanged;
residuals live under ``residual.`` and the router under ``router.``
(:mod:`.naming`).

The balance loss reaches the optimizer in one of two ways
(:attr:`RMoEFFN.balance_loss_mode`):

- ``'gradient'`` (default): the layer adds ``balance_loss_weight *
  aux_grad_scale`` as the gradient of its balance loss when the backward pass
  goes through it (:func:`.aux_grad.inject_aux_grad`), so the segmentor or
  detector needs no change. ``aux_grad_scale`` must follow the factor the
  optimizer wrapper puts on the main loss (AMP loss scale, gradient
  accumulation); :func:`rmoe_mm.moe.set_aux_grad_scale` sets it for a whole
  model, and ``RMoEStageHook`` does so every iteration.
- ``'loss'``: the layer keeps its balance loss for
  :func:`rmoe_mm.moe.moe_balance_loss`, which ``MoELossHook`` adds to the
  model's losses as ``loss_moe``.
"""
import copy
from typing import Dict, Iterator, Optional, Sequence, Tuple, Union

import torch
from mmcv.cnn import build_activation_layer
from mmcv.cnn.bricks.drop import build_dropout
from mmcv.cnn.bricks.scale import LayerScale
from mmengine.model import BaseModule, Sequential
from torch import Tensor, nn

from rmoe_mm.registry import MODELS
from .aux_grad import inject_aux_grad
from .config import MoEConfig, check_number
from .dispatch import combine, expert_capacity, gather_rows, plan_dispatch
from .experts import ExpertResiduals
from .naming import RESIDUAL, ROUTER
from .router import Routing, TopKRouter
from .router import balance_loss as compute_balance_loss

#: How the balance loss reaches the optimizer; see the module docstring.
BALANCE_LOSS_MODES = ('gradient', 'loss')


@MODELS.register_module()
class RMoEFFN(BaseModule):
    """Residual-MoE drop-in for mmcv's ``FFN`` (fc1 -> act -> fc2).

    Every token visits its ``top_k`` experts; expert ``i`` is the dense FFN
    with weights ``shared + residual_i``. With ``alignment='stopgrad'`` the
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
    differs. The balance loss needs no caller change: in the default
    ``balance_loss_mode='gradient'`` its gradient, ``balance_loss_weight *
    aux_grad_scale``, is added when the backward pass goes through this
    layer (once, also under gradient checkpointing). With
    ``AmpOptimWrapper`` or gradient accumulation that scale must follow the
    optimizer wrapper (``RMoEStageHook`` sets it every iteration).

    After each forward the layer holds, detached: :attr:`last_routing` (the
    router's decision) and, in training, :attr:`last_balance_loss` (the
    unweighted balance loss); :meth:`moe_stats` summarises them.

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
        moe_cfg (MoEConfig | dict, optional): The MoE settings (see
            :class:`~rmoe_mm.moe.MoEConfig` for each one and its default).
            Default: None (the defaults: 8 experts, top-1, dropless).
        **settings: MoE settings given one by one (``num_experts=4``, ...),
            applied on top of ``moe_cfg``.
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
                 moe_cfg: Union[MoEConfig, dict, None] = None,
                 **settings):
        super().__init__(init_cfg)
        if num_fcs != 2:
            raise ValueError('RMoEFFN supports num_fcs=2 (fc1, fc2) only, '
                             f'got num_fcs={num_fcs}')
        check_number('embed_dims', embed_dims, 1, integer=True)
        check_number(
            'feedforward_channels', feedforward_channels, 1, integer=True)
        cfg = MoEConfig.build(moe_cfg, **settings)
        cfg.check_shape(embed_dims, feedforward_channels)
        self.moe_cfg = cfg
        self.embed_dims = embed_dims
        self.feedforward_channels = feedforward_channels
        self.num_fcs = num_fcs

        # The shared weights: mmcv FFN's exact module layout and keys.
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

        # The MoE-specific children, named by the contract of .naming.
        self.add_module(
            RESIDUAL,
            ExpertResiduals(cfg.num_experts, embed_dims, feedforward_channels,
                            cfg.residual_rank, cfg.residual_std))
        self.add_module(
            ROUTER,
            TopKRouter(embed_dims, cfg.num_experts, cfg.top_k, cfg.router,
                       cfg.gate_noise))

        #: d(total loss)/d(weighted balance loss) in ``'gradient'`` mode:
        #: the optimizer wrapper's factor on the main loss (see
        #: :func:`rmoe_mm.moe.set_aux_grad_scale`).
        self.aux_grad_scale = 1.0
        #: ``'gradient'`` (injected in backward) or ``'loss'`` (kept for
        #: :func:`rmoe_mm.moe.moe_balance_loss`).
        self.balance_loss_mode = 'gradient'
        #: Routing of the last forward (detached), None before the first.
        self.last_routing: Optional[Routing] = None
        #: Unweighted balance loss of the last training forward (detached).
        self.last_balance_loss: Optional[Tensor] = None
        self._kept_balance_loss: Optional[Tensor] = None
        self._stats: Dict[str, Tensor] = {}

    # The settings, read from the one config object (``balance_loss_weight``
    # may be changed; the new value is checked).
    num_experts = property(lambda self: self.moe_cfg.num_experts)
    top_k = property(lambda self: self.moe_cfg.top_k)
    capacity_factor = property(lambda self: self.moe_cfg.capacity_factor)
    alignment = property(lambda self: self.moe_cfg.alignment)
    balance_loss = property(lambda self: self.moe_cfg.balance_loss)
    residual_rank = property(lambda self: self.moe_cfg.residual_rank)

    @property
    def balance_loss_weight(self) -> float:
        return self.moe_cfg.balance_loss_weight

    @balance_loss_weight.setter
    def balance_loss_weight(self, weight: float) -> None:
        self.moe_cfg = self.moe_cfg.replace(balance_loss_weight=weight)

    @classmethod
    def from_dense(cls,
                   ffn: nn.Module,
                   moe_cfg: Union[MoEConfig, dict, None] = None,
                   **settings) -> 'RMoEFFN':
        """An RMoE FFN whose shared weights are a copy of the mmcv ``FFN``.

        Dims, activation, dropouts, identity and LayerScale are taken from
        ``ffn``; ``moe_cfg`` and ``settings`` are the MoE settings, as in the
        constructor. The result is on ``ffn``'s device and dtype and in its
        train/eval mode.
        """
        cfg = MoEConfig.build(moe_cfg, **settings)
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
            moe_cfg=cfg)
        moe.layers[0][1] = copy.deepcopy(activation)
        moe.dropout_layer = copy.deepcopy(ffn.dropout_layer)
        moe.gamma2 = copy.deepcopy(ffn.gamma2)
        moe.layers.load_state_dict(layers.state_dict())
        weight = fc1.weight
        return moe.to(
            device=weight.device, dtype=weight.dtype).train(ffn.training)

    def forward(self, x: Tensor, identity: Optional[Tensor] = None) -> Tensor:
        """Like mmcv ``FFN.forward``: ``identity + FFN(x)``, x ``[..., C]``."""
        tokens = x.reshape(-1, self.embed_dims)
        routing = self.router(tokens)
        plan = plan_dispatch(
            routing.expert_index, self.num_experts,
            expert_capacity(tokens.shape[0], self.num_experts, self.top_k,
                            self.capacity_factor))
        rows = self.run_experts(gather_rows(tokens, plan), plan.counts)
        gates = routing.gates[plan.token_index, plan.choice_index]
        aux_loss = None
        if self.training:
            aux_loss = compute_balance_loss(self.balance_loss, routing)
            gates = self._apply_balance_loss(gates, aux_loss)
        self._record(routing, plan, aux_loss)
        out = combine(rows, gates, plan, self.alignment).view(x.shape)
        out = self.dropout_layer(self.gamma2(out))
        if not self.add_identity:
            return out
        return (x if identity is None else identity) + out

    def run_experts(self, rows: Tensor, counts: Sequence[int]) -> Tensor:
        """Expert ``e``'s FFN on its slice of the expert-sorted ``rows``.

        The one place where expert compute happens: ``rows [A, C]`` hold the
        tokens of expert 0, then expert 1, ..., ``counts[e]`` rows each;
        the result ``[A, C]`` is in the same order. Routing before and the
        combine after do not depend on how this is computed.
        """
        fc1, activation, drop1 = self.layers[0]
        fc2, drop2 = self.layers[1], self.layers[2]
        hidden = drop1(activation(self.residual.fc1(rows, counts, fc1)))
        return drop2(self.residual.fc2(hidden, counts, fc2))

    def _apply_balance_loss(self, gates: Tensor, aux_loss: Tensor) -> Tensor:
        """Route the balance loss to the optimizer (see the module doc)."""
        if self.balance_loss_mode == 'loss':
            self._kept_balance_loss = aux_loss
            return gates
        if self.balance_loss_mode != 'gradient':
            raise ValueError(f'balance_loss_mode must be one of '
                             f'{BALANCE_LOSS_MODES}, got '
                             f'{self.balance_loss_mode!r}')
        grad = self.balance_loss_weight * self.aux_grad_scale
        if grad and aux_loss.requires_grad:
            # The gates are on the backward path whenever the balance loss
            # has a gradient: both come from the router's softmax.
            gates = inject_aux_grad(gates, aux_loss, grad)
        return gates

    def pop_kept_balance_loss(self) -> Optional[Tensor]:
        """The balance loss kept in ``'loss'`` mode since the last call
        (unweighted, in the autograd graph), or None."""
        loss, self._kept_balance_loss = self._kept_balance_loss, None
        return loss

    @torch.no_grad()
    def _record(self, routing: Routing, plan,
                aux_loss: Optional[Tensor]) -> None:
        # A snapshot of the last forward, overwritten (never accumulated), so
        # the second forward of gradient checkpointing does not count twice.
        probs = routing.probs.detach()
        self.last_routing = Routing(routing.expert_index,
                                    routing.gates.detach(), probs)
        self.last_balance_loss = None if aux_loss is None else \
            aux_loss.detach()
        entropy = -(probs * probs.clamp_min(1e-20).log()).sum(-1).mean() \
            if probs.shape[0] else probs.new_zeros(())
        self._stats = dict(
            tokens_per_expert=plan.requested.detach(),
            dropped=plan.num_dropped.detach(),
            num_tokens=torch.tensor(probs.shape[0]),
            router_entropy=entropy,
        )
        if aux_loss is not None:
            self._stats['balance_loss'] = self.last_balance_loss

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


def rmoe_layers(model: nn.Module) -> Iterator[Tuple[str, RMoEFFN]]:
    """``(name, layer)`` of every RMoE FFN in ``model``, in module order."""
    for name, module in model.named_modules():
        if isinstance(module, RMoEFFN):
            yield name, module
