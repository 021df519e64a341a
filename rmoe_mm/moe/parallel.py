"""Expert parallelism: the experts of each RMoE FFN spread over the ranks.

With ``moe_cfg=dict(expert_parallel=True)`` under a process group of ``W``
ranks, consecutive ranks form expert-parallel groups of ``G`` ranks
(``expert_parallel_size``, default ``W``; ranks ``0..G-1``, ``G..2G-1``,
...). Rank ``r`` holds the residuals of the ``E / G`` experts ``(r % G) *
E / G ...``; the core, routers and heads stay replicated. The ``W / G``
ranks with the same ``r % G`` hold the same experts: a *replica group*.
:class:`ExpertParallelLayout` is that arithmetic.

Tokens travel where their expert is (:meth:`ExpertParallel.run`, called by
``RMoEFFN.run_experts``): the ranks first exchange how many rows each sends
to each expert (``all_to_all_single`` of counts), then the rows themselves
with uneven splits (no padding: a rank may send or receive zero rows, and
ranks with different token counts exchange as many rows as they have), run
their local experts, and send the results back the same way. Every rank
calls this for every RMoE FFN in every forward, so no rank waits for a
collective another one skips; the exchange is differentiable (the backward
pass is the reverse exchange).

Gradients: DDP averages the replicated parameters over all ``W`` ranks, i.e.
it follows ``mean_r loss_r``. The residual shards must be excluded from DDP
(:func:`ignore_expert_shards_in_ddp`; ``DeviceAwareDistributedDataParallel``
does it before every wrap, also when ``RMoEStageHook`` re-wraps). The
backward pass of the exchange already sums, on the rank that holds expert
``e``, the gradients of every rank of its group; a hook on each shard divides
by ``W`` and sums over the replica group, so every shard gets ``d mean_r
loss_r / d theta_e``, exactly what a single process with all ranks' batches
would compute (and a non-finite gradient anywhere is one everywhere, so
fp16 loss scaling skips steps on all ranks alike).

State dicts are independent of the world size: the model's ``state_dict()``
holds full-size ``[E, ...]`` residuals (gathered from the group; a collective,
so every rank of the group must call it, or
:func:`gathered_for_save` must have prepared rank 0, as ``GatherOnSaveHook``
does for mmengine's rank-0-only ``save_checkpoint``), and ``load_state_dict``
takes full-size tensors and keeps this rank's experts. Optimizer states of
the shards get the same treatment (:func:`shard_optimizer_state`).
"""
import contextlib
import contextvars
import functools
from dataclasses import dataclass
from typing import (Callable, Dict, Iterable, Iterator, List, Optional,
                    Sequence, Tuple)

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .experts import ExpertResiduals
from .naming import RESIDUAL

#: While set, the residual state-dict hook hands out local shards.
_LOCAL_STATE = contextvars.ContextVar('rmoe_mm_local_state', default=False)


@dataclass(frozen=True)
class ExpertParallelLayout:
    """Which ranks hold which experts; arithmetic only, no process group.

    Args:
        num_experts (int): Experts E of a layer.
        world_size (int): Ranks W.
        group_size (int): Ranks G of an expert-parallel group; divides W
            and E.
        rank (int): This rank.
    """

    num_experts: int
    world_size: int
    group_size: int
    rank: int

    def __post_init__(self):
        if self.world_size % self.group_size:
            raise ValueError(
                f'expert_parallel_size={self.group_size} does not divide the '
                f'world size {self.world_size}')
        if self.num_experts % self.group_size:
            raise ValueError(
                f'expert parallelism needs num_experts={self.num_experts} to '
                'be divisible by the expert-parallel group size '
                f'{self.group_size}')

    @property
    def num_local_experts(self) -> int:
        """Experts each rank holds, E / G."""
        return self.num_experts // self.group_size

    @property
    def first_expert(self) -> int:
        """This rank's first expert."""
        return self.rank % self.group_size * self.num_local_experts

    def expert_groups(self) -> List[List[int]]:
        """Every expert-parallel group: consecutive ranks."""
        size = self.group_size
        return [
            list(range(start, start + size))
            for start in range(0, self.world_size, size)
        ]

    def replica_groups(self) -> List[List[int]]:
        """Every group of ranks that hold the same experts."""
        return [
            list(range(offset, self.world_size, self.group_size))
            for offset in range(self.group_size)
        ]

    def expert_group(self) -> List[int]:
        """This rank's expert-parallel group."""
        return self.expert_groups()[self.rank // self.group_size]

    def replica_group(self) -> List[int]:
        """The ranks that hold this rank's experts (this one included)."""
        return self.replica_groups()[self.rank % self.group_size]


class _AllToAll(torch.autograd.Function):
    """``all_to_all_single`` with uneven splits; backward: the reverse."""

    @staticmethod
    def forward(ctx, rows: Tensor, send: List[int], recv: List[int], group):
        ctx.send, ctx.recv, ctx.group = send, recv, group
        return _all_to_all(rows, send, recv, group)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _all_to_all(grad, ctx.recv, ctx.send, ctx.group), None, None, \
            None


def _all_to_all(rows: Tensor, send: List[int], recv: List[int],
                group) -> Tensor:
    out = rows.new_empty((sum(recv), ) + tuple(rows.shape[1:]))
    dist.all_to_all_single(out, rows.contiguous(), recv, send, group=group)
    return out


def _regroup(rows: Tensor, sizes: List[int], order: List[int]) -> Tensor:
    """``rows`` cut into chunks of ``sizes``, concatenated in ``order``."""
    chunks = rows.split(sizes)
    return torch.cat([chunks[i] for i in order])


class ExpertParallel:
    """The process groups of one expert-parallel layout, and the token
    exchange of a layer.

    Layers of one layout share the process groups (see
    :func:`expert_parallel_for`); ``deepcopy`` returns the object unchanged.

    Args:
        layout (ExpertParallelLayout): The layout (this rank's view).
        group: Process group of this rank's expert-parallel group.
        replica_group: Process group of its replica group, None when no
            other rank holds the same experts.
    """

    def __init__(self, layout: ExpertParallelLayout, group, replica_group):
        self.layout = layout
        self.group = group
        self.replica_group = replica_group

    def __deepcopy__(self, memo):
        return self

    def __repr__(self) -> str:
        layout = self.layout
        last = layout.first_expert + layout.num_local_experts - 1
        return (f'ExpertParallel(rank {layout.rank} of {layout.world_size}, '
                f'group of {layout.group_size}, experts '
                f'{layout.first_expert}-{last} of {layout.num_experts})')

    # ------------------------------------------------------------ forward
    def run(self, rows: Tensor, counts: Sequence[int],
            local_experts: Callable[[Tensor, List[int]], Tensor]) -> Tensor:
        """Every expert on its rows, wherever it lives.

        Args:
            rows (Tensor): ``[A, C]`` this rank's rows, sorted by (global)
                expert.
            counts (Sequence[int]): Rows of each of the E experts.
            local_experts (callable): ``(rows, counts) -> out`` for this
                rank's ``E / G`` experts (rows sorted by local expert).

        Returns:
            Tensor: ``[A, C']`` the experts' outputs, in the order of
            ``rows``.
        """
        layout = self.layout
        size, local = layout.group_size, layout.num_local_experts
        counts = [int(c) for c in counts]
        if len(counts) != layout.num_experts or sum(counts) != rows.shape[0]:
            raise ValueError(f'counts {counts} do not split {rows.shape[0]} '
                             f'rows among {layout.num_experts} experts')
        if size == 1:
            return local_experts(rows, counts)
        # How many rows each rank sends to each of my experts: recv[s][e].
        sent_counts = torch.tensor(counts, device=rows.device)
        recv_counts = torch.empty_like(sent_counts)
        dist.all_to_all_single(recv_counts, sent_counts, group=self.group)
        recv = recv_counts.view(size, local).tolist()
        send_splits = [
            sum(counts[r * local:(r + 1) * local]) for r in range(size)
        ]
        recv_splits = [sum(per_rank) for per_rank in recv]
        received = _AllToAll.apply(rows, send_splits, recv_splits, self.group)
        # Arrived rank-major (rank s: its rows of expert 0, 1, ...); the
        # experts want them expert-major, and the way back is the inverse.
        sizes = [n for per_rank in recv for n in per_rank]
        by_expert = [s * local + e for e in range(local) for s in range(size)]
        out = local_experts(
            _regroup(received, sizes, by_expert),
            [sum(recv[s][e] for s in range(size)) for e in range(local)])
        by_rank = [e * size + s for s in range(size) for e in range(local)]
        out = _regroup(out, [sizes[i] for i in by_expert], by_rank)
        return _AllToAll.apply(out, recv_splits, send_splits, self.group)

    def check_excluded_from_ddp(self, residuals: nn.Module) -> None:
        """Raise if DDP would average (and first overwrite) the shards.

        DDP marks the parameters it was told to ignore with
        ``_ddp_ignored``; a shard without it would be broadcast from rank 0
        at wrap time and averaged with other ranks' experts.
        """
        if getattr(residuals, '_rmoe_ddp_checked', False):
            return
        unmarked = [
            name for name, p in residuals.named_parameters()
            if not getattr(p, '_ddp_ignored', False)
        ]
        if unmarked:
            raise RuntimeError(
                'expert-parallel residuals are not excluded from DDP (e.g. '
                f'{unmarked[0]!r}): DDP would overwrite every rank\'s experts '
                "with rank 0's and average different experts' gradients. "
                "Use model_wrapper_cfg=dict(type='DeviceAwareDistributed"
                "DataParallel') (tools/train.py's default) or call "
                'rmoe_mm.moe.parallel.ignore_expert_shards_in_ddp(model) '
                'before wrapping the model.')
        residuals._rmoe_ddp_checked = True

    # ------------------------------------------------------------ tensors
    def shard(self, full: Tensor) -> Tensor:
        """This rank's rows of a full-size ``[E, ...]`` tensor (a copy)."""
        first = self.layout.first_expert
        return full[first:first + self.layout.num_local_experts].clone()

    def all_gather(self, shard: Tensor) -> Tensor:
        """The full-size tensor from every rank's shard (collective)."""
        shard = shard.detach().contiguous()
        if self.layout.group_size == 1:
            return shard.clone()
        parts = [
            torch.empty_like(shard) for _ in range(self.layout.group_size)
        ]
        dist.all_gather(parts, shard, group=self.group)
        return torch.cat(parts)

    def gather(self, shard: Tensor, dst: int) -> Optional[Tensor]:
        """The full-size tensor on rank ``dst`` of this group (collective
        over the group), None on the other ranks."""
        shard = shard.detach().contiguous()
        if self.layout.group_size == 1:
            return shard.clone() if self.layout.rank == dst else None
        receive = self.layout.rank == dst
        parts = [
            torch.empty_like(shard) for _ in range(self.layout.group_size)
        ] if receive else None
        dist.gather(shard, parts, dst=dst, group=self.group)
        return torch.cat(parts) if receive else None

    def reduce_gradient(self, grad: Tensor) -> Tensor:
        """A shard's gradient as DDP would average it: ``/ W``, summed over
        the replica group.

        A gradient that is not finite on one rank is made infinite on all
        of them, as DDP's average would: a dynamic loss scaler (fp16 AMP)
        then skips the step on every rank alike instead of only on the rank
        whose experts overflowed, which would let replicas drift apart.
        """
        grad = grad / self.layout.world_size
        bad = torch.isfinite(grad).all().logical_not().to(grad.dtype)
        bad = bad.reshape(1)
        for group in (self.group, self.replica_group):  # spans the world
            if group is not None:
                dist.all_reduce(bad, op=dist.ReduceOp.MAX, group=group)
        grad.masked_fill_(bad.bool(), float('inf'))
        if self.replica_group is not None:
            dist.all_reduce(grad, group=self.replica_group)
        return grad


# Process groups per (default group, group size): every rank must create them
# in the same order, once.
_GROUPS: Dict[int, Tuple[object, object, object]] = {}


def expert_parallel_for(num_experts: int,
                        group_size: Optional[int] = None) -> ExpertParallel:
    """The :class:`ExpertParallel` of this rank under the current process
    group (its process groups are created on first use, so every rank must
    ask in the same order, as building the same model does).

    Args:
        num_experts (int): Experts E of the layer.
        group_size (int, optional): Expert-parallel group size; None: the
            world size.
    """
    world = dist.group.WORLD
    world_size, rank = dist.get_world_size(), dist.get_rank()
    size = group_size or world_size
    layout = ExpertParallelLayout(num_experts, world_size, size, rank)
    cached = _GROUPS.get(size)
    if cached is None or cached[0] is not world:
        group = replica = None
        for ranks in layout.expert_groups():  # every rank creates each one
            created = dist.new_group(ranks)
            if rank in ranks:
                group = created
        for ranks in layout.replica_groups():
            created = dist.new_group(ranks) if len(ranks) > 1 else None
            if rank in ranks:
                replica = created
        cached = _GROUPS[size] = (world, group, replica)
    return ExpertParallel(layout, cached[1], cached[2])


# ------------------------------------------------------------- residuals
def build_expert_residuals(
        num_experts: int,
        embed_dims: int,
        feedforward_channels: int,
        rank: Optional[int],
        std: float,
        parallel: Optional[ExpertParallel] = None) -> ExpertResiduals:
    """The residuals of a layer: all ``E`` experts, or this rank's shard.

    The shard is cut from a full-size draw, so the random stream and every
    expert's initial value are those of a single process, whatever the
    world size. The shard gets the state-dict, load and gradient hooks of
    the module docstring.
    """
    full = ExpertResiduals(num_experts, embed_dims, feedforward_channels, rank,
                           std)
    if parallel is None:
        return full
    with torch.device('meta'):  # no second random draw
        shard = ExpertResiduals(parallel.layout.num_local_experts, embed_dims,
                                feedforward_channels, rank, std)
    shard.load_state_dict(
        {
            k: parallel.shard(v)
            for k, v in full.state_dict().items()
        },
        assign=True)
    del full
    shard._register_state_dict_hook(
        functools.partial(_full_state_dict_hook, parallel))
    shard.register_load_state_dict_pre_hook(
        functools.partial(_shard_load_pre_hook, parallel))
    for param in shard.parameters():
        param.register_hook(parallel.reduce_gradient)
    return shard


def _full_state_dict_hook(parallel: ExpertParallel, module: nn.Module,
                          state_dict, prefix: str, local_metadata) -> None:
    """State-dict hook: full-size ``[E, ...]`` tensors in place of shards."""
    if _LOCAL_STATE.get():
        return
    gathered = getattr(module, '_rmoe_gathered', None)
    for key in [k for k in state_dict if k.startswith(prefix)]:
        if gathered is not None:
            state_dict[key] = gathered[key[len(prefix):]]
        else:
            state_dict[key] = parallel.all_gather(state_dict[key])


def _shard_load_pre_hook(parallel: ExpertParallel, module: nn.Module,
                         state_dict, prefix: str, *args) -> None:
    """Load pre-hook: keep this rank's experts of full-size tensors."""
    experts = parallel.layout.num_experts
    for key in [k for k in state_dict if k.startswith(prefix)]:
        value = state_dict[key]
        if not isinstance(value, Tensor) or value.dim() == 0:
            continue
        if value.shape[0] != experts:
            raise ValueError(
                f'checkpoint tensor {key!r} has shape {tuple(value.shape)}: '
                f'{value.shape[0]} experts, but the model has num_experts='
                f'{experts} (this rank holds '
                f'{parallel.layout.num_local_experts} of them). '
                'Expert-parallel models load full-size [E, ...] residuals, '
                'as they save them.')
        state_dict[key] = parallel.shard(value)


# ------------------------------------------------------------- the model
def expert_parallel_layers(
        model: nn.Module) -> Iterator[Tuple[str, nn.Module, ExpertParallel]]:
    """``(name, layer, parallel)`` of every RMoE FFN whose experts are
    spread over ranks, in module order."""
    for name, module in model.named_modules():
        parallel = getattr(module, 'expert_parallel', None)
        if isinstance(parallel, ExpertParallel):
            yield name, module, parallel


def expert_shards(model: nn.Module) -> Dict[str, nn.Parameter]:
    """Fully qualified name -> parameter of every residual shard."""
    shards = {}
    for name, layer, _ in expert_parallel_layers(model):
        prefix = f'{name}.{RESIDUAL}.' if name else f'{RESIDUAL}.'
        for param_name, param in getattr(layer, RESIDUAL).named_parameters():
            shards[prefix + param_name] = param
    return shards


def ignore_expert_shards_in_ddp(model: nn.Module) -> List[str]:
    """Tell DDP (built next, on ``model``) to leave the shards alone.

    Adds their names to the list of
    ``DistributedDataParallel._set_params_and_buffers_to_ignore_for_model``
    (kept on ``model``, so every later wrap honours it). Returns the names.
    """
    from torch.nn.parallel import DistributedDataParallel
    names = list(expert_shards(model))
    if names:
        ignored = list(getattr(model, '_ddp_params_and_buffers_to_ignore', []))
        ignored += [n for n in names if n not in ignored]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            model, ignored)
    return names


@contextlib.contextmanager
def local_shards():
    """Inside: ``state_dict()`` of expert-parallel models holds this rank's
    shards as they are (no communication)."""
    token = _LOCAL_STATE.set(True)
    try:
        yield
    finally:
        _LOCAL_STATE.reset(token)


def full_state_shapes(module: nn.Module) -> Dict[str, torch.Size]:
    """The shapes of ``module.state_dict()`` (full-size residuals), without
    the communication and memory of gathering them: for checks that only
    compare shapes, e.g. before loading a checkpoint."""
    with local_shards():
        shapes = {k: v.shape for k, v in module.state_dict().items()}
    for name, layer, parallel in expert_parallel_layers(module):
        prefix = f'{name}.{RESIDUAL}.' if name else f'{RESIDUAL}.'
        for key, shape in shapes.items():
            if key.startswith(prefix):
                shapes[key] = torch.Size((parallel.layout.num_experts, ) +
                                         tuple(shape[1:]))
    return shapes


def _optimizer_params(optimizer) -> List[nn.Parameter]:
    return [p for group in optimizer.param_groups for p in group['params']]


def _state_to_gather(optimizer, param) -> List[str]:
    """Optimizer state entries of a shard that are per-expert tensors."""
    return sorted(name
                  for name, value in optimizer.state.get(param, {}).items()
                  if isinstance(value, Tensor) and value.shape == param.shape)


def _zero_optimizers(optimizers) -> list:
    try:
        from torch.distributed.optim import ZeroRedundancyOptimizer
    except ImportError:  # pragma: no cover
        return []
    return [o for o in optimizers if isinstance(o, ZeroRedundancyOptimizer)]


@contextlib.contextmanager
def gathered_for_save(model: nn.Module,
                      optimizers: Iterable = (),
                      dst: int = 0):
    """Let rank ``dst`` alone save whole state: a block every rank enters.

    On entry every rank takes part in gathering the full-size residuals of
    ``model`` and the optimizer states of the shards onto ``dst``, and in
    consolidating the state of ZeRO optimizers; inside the block rank
    ``dst``'s ``model.state_dict()`` and ``optimizer.state_dict()`` use them
    without communicating (mmengine's ``Runner.save_checkpoint`` runs on
    rank 0 only). Needs :func:`shard_optimizer_state` on the optimizers.
    """
    optimizers = list(optimizers)
    zero = _zero_optimizers(optimizers)
    receive = not dist.is_initialized() or dist.get_rank() == dst
    modules, prepared = [], []
    for _, layer, parallel in expert_parallel_layers(model):
        if dst not in parallel.layout.expert_group():
            continue  # a replica group without dst: nothing to send
        residuals = getattr(layer, RESIDUAL)
        with local_shards():
            state = residuals.state_dict()
        gathered = {}
        for key, shard in state.items():  # one full tensor at a time
            full = parallel.gather(shard, dst)
            if receive:
                gathered[key] = full.cpu()
        if receive:
            residuals._rmoe_gathered = gathered
            modules.append(residuals)
    shard_of = _shard_parallel(model)
    for optimizer in optimizers:
        if optimizer in zero:
            continue
        gathered = {}
        for param in _optimizer_params(optimizer):
            parallel = shard_of.get(id(param))
            if parallel is None or dst not in parallel.layout.expert_group():
                continue
            for name in _state_to_gather(optimizer, param):
                full = parallel.gather(optimizer.state[param][name], dst)
                if receive:
                    gathered.setdefault(id(param), {})[name] = full.cpu()
        if receive:
            optimizer._rmoe_gathered = gathered
            prepared.append(optimizer)
    for optimizer in zero:
        optimizer.consolidate_state_dict(to=dst)
        # mmengine's ZeroRedundancyOptimizer.state_dict consolidates again,
        # a collective that rank dst would enter alone; it is done already.
        optimizer.consolidate_state_dict = lambda to=0: None
    try:
        yield
    finally:
        for item in modules + prepared:
            del item._rmoe_gathered
        for optimizer in zero:
            del optimizer.consolidate_state_dict


def _shard_parallel(model: nn.Module) -> Dict[int, ExpertParallel]:
    """id(shard parameter) -> its layer's :class:`ExpertParallel`."""
    return {
        id(param): parallel
        for _, layer, parallel in expert_parallel_layers(model)
        for param in getattr(layer, RESIDUAL).parameters()
    }


def shard_optimizer_state(optimizer, model: nn.Module) -> bool:
    """Make ``optimizer``'s state dict independent of the world size.

    Its ``state_dict()`` then holds full-size states of the residual shards
    of ``model`` (gathered: a collective, unless :func:`gathered_for_save`
    prepared it), and ``load_state_dict`` keeps this rank's experts of
    full-size states. Returns False (and does nothing) when ``model`` has
    no shards or the hooks are installed already.
    """
    shard_of = _shard_parallel(model)
    if not shard_of or getattr(optimizer, '_rmoe_sharded', False):
        return False

    def params_by_index(state_dict):
        return {
            index: param
            for saved, group in zip(state_dict['param_groups'],
                                    optimizer.param_groups)
            for index, param in zip(saved['params'], group['params'])
        }

    def full_state(opt, state_dict):
        if _LOCAL_STATE.get():
            return None
        gathered = getattr(opt, '_rmoe_gathered', None)
        state = dict(state_dict['state'])
        for index, param in params_by_index(state_dict).items():
            parallel = shard_of.get(id(param))
            if parallel is None or index not in state:
                continue
            entry = dict(state[index])
            for name in _state_to_gather(opt, param):
                entry[name] = gathered[id(param)][name] if gathered is not \
                    None else parallel.all_gather(entry[name])
            state[index] = entry
        return dict(state_dict, state=state)

    def shard_state(opt, state_dict):
        state = dict(state_dict['state'])
        for index, param in params_by_index(state_dict).items():
            parallel = shard_of.get(id(param))
            if parallel is None or index not in state:
                continue
            entry = dict(state[index])
            for name, value in entry.items():
                if isinstance(value, Tensor) and value.dim() and \
                        value.shape[1:] == param.shape[1:] and \
                        value.shape[0] == parallel.layout.num_experts:
                    entry[name] = parallel.shard(value)
            state[index] = entry
        return dict(state_dict, state=state)

    optimizer.register_state_dict_post_hook(full_state)
    optimizer.register_load_state_dict_pre_hook(shard_state)
    optimizer._rmoe_sharded = True
    return True
