"""Hooks that watch a backbone's FFNs: what the analysis tools measure.

A backbone of this project (Swin from mmseg / mmdet or RMoE Swin, CvT or
RMoE CvT) keeps its blocks at ``stages[i].blocks[j]`` and each block's FFN at
``.ffn``: an mmcv ``FFN`` (dense) or an :class:`~rmoe_mm.moe.RMoEFFN`.

- :class:`SplittingProbe` accumulates, per FFN, the per-group gradient sums
  of fc1 and fc2 that :mod:`.splitting` turns into a score.
- :class:`RoutingRecorder` turns each RMoE FFN's last routing into a map of
  top-1 experts over the stage's token grid.
"""
import contextlib
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from rmoe_mm.moe import RMoEFFN, TopKRouter
from .moe_access import FCS, core_linear, watch_expert_linears
from .splitting import GroupedGradientSums, kmeans, nearest_centroid

#: How tokens are grouped for the splitting score.
GROUPINGS = ('router', 'kmeans')


@dataclass
class FFNSite:
    """One FFN of a backbone and where it sits."""

    #: Module name of the FFN in the model (``backbone.stages.2...ffn``).
    name: str
    stage: int
    block: int
    block_module: nn.Module
    ffn: nn.Module

    @property
    def is_moe(self) -> bool:
        return isinstance(self.ffn, RMoEFFN)

    @property
    def label(self) -> str:
        """Short name for tables and plots: ``s2.b1``."""
        return f's{self.stage}.b{self.block}'


def backbone_ffns(backbone: nn.Module,
                  prefix: str = 'backbone') -> List[FFNSite]:
    """Every block's FFN of ``backbone``, stage by stage.

    Raises:
        ValueError: the backbone has no ``stages[i].blocks[j].ffn`` layout.
    """
    stages = getattr(backbone, 'stages', None)
    sites = []
    for stage, sequence in enumerate(stages or []):
        for block, module in enumerate(getattr(sequence, 'blocks', [])):
            ffn = getattr(module, 'ffn', None)
            if ffn is None or not hasattr(ffn, 'layers'):
                break
            sites.append(
                FFNSite(f'{prefix}.stages.{stage}.blocks.{block}.ffn', stage,
                        block, module, ffn))
    if not sites:
        raise ValueError(
            f'{type(backbone).__name__} has no FFNs at stages[i].blocks[j].'
            'ffn (the layout of Swin and CvT backbones); the analysis tools '
            'support those backbones')
    return sites


def backbone_depths(backbone: nn.Module) -> List[int]:
    """Blocks per stage."""
    return [len(stage.blocks) for stage in backbone.stages]


def seeded_router(embed_dims: int, num_experts: int, router_type: str,
                  seed: int, device) -> TopKRouter:
    """The router that converting a dense FFN to RMoE would give, drawn
    with ``seed`` (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        router = TopKRouter(
            embed_dims, num_experts, top_k=1, router_type=router_type)
    return router.to(device).eval()


class _SiteProbe:
    """Gradient sums of one FFN, per half (see :class:`SplittingProbe`)."""

    def __init__(self, site: FFNSite, num_groups: int, dtype: torch.dtype):
        self.site = site
        self.num_groups = num_groups
        self.dtype = dtype
        self.halves: List[Dict[str, GroupedGradientSums]] = []
        self.group_fn: Optional[Callable[[Tensor, Tensor], Tensor]] = None
        self.samples: List[Tensor] = []
        self._groups: Optional[Tensor] = None

    def sums(self, half: int) -> Dict[str, GroupedGradientSums]:
        while len(self.halves) <= half:
            self.halves.append({
                fc:
                GroupedGradientSums(
                    self.num_groups,
                    *core_linear(self.site.ffn, fc).weight.shape,
                    device=core_linear(self.site.ffn, fc).weight.device,
                    dtype=self.dtype)
                for fc in FCS
            })
        return self.halves[half]


class SplittingProbe:
    """Hooks on every FFN's fc1 and fc2 that accumulate per-group gradient
    sums (:class:`~.splitting.GroupedGradientSums`) over backward passes.

    Groups of a token (one per FFN, shared by fc1 and fc2):

    - ``'router'``: an RMoE FFN's own router (its top-1 choice, in fact the
      expert each row was sent to); for a dense FFN the router that the RMoE
      conversion would give it (:func:`seeded_router`, seed ``seed +`` the
      FFN's index), top-1 without noise.
    - ``'kmeans'``: the nearest of ``num_experts`` k-means centroids of the
      FFN's inputs, fitted by :meth:`fit_kmeans` first.
    - a callable ``(site, rows) -> groups``: groups in ``[0, num_experts)``
      of the fc1 input rows ``[A, C]`` of ``site`` (for constructed cases).

    Use as a context manager; set :attr:`half` before each backward pass
    (batches alternate between two halves for the split-half estimate).

    Args:
        sites: The FFNs (:func:`backbone_ffns`).
        grouping (str | callable): ``'router'``, ``'kmeans'`` or a
            function of the rows.
        num_experts (int): Groups of a dense FFN (and k-means clusters).
        router_type (str): Router of dense FFNs: ``'linear'`` or
            ``'cosine'``. Default: ``'linear'``.
        seed (int): Seed of the dense FFNs' routers and of k-means.
        dtype: Accumulation dtype. Default: float32.
    """

    def __init__(self,
                 sites: List[FFNSite],
                 grouping: str = 'router',
                 num_experts: int = 8,
                 router_type: str = 'linear',
                 seed: int = 0,
                 dtype: torch.dtype = torch.float32):
        if not callable(grouping) and grouping not in GROUPINGS:
            raise ValueError(f'grouping must be one of {GROUPINGS}, got '
                             f'{grouping!r}')
        self.grouping = grouping
        self.seed = seed
        self.half = 0
        self.collecting_samples = False
        self.samples_per_call = 512
        self.probes = []
        for index, site in enumerate(sites):
            groups = site.ffn.num_experts if (
                site.is_moe and grouping == 'router') else num_experts
            probe = _SiteProbe(site, groups, dtype)
            if callable(grouping):
                probe.group_fn = (
                    lambda rows, expert_ids, site=site: grouping(site, rows))
            elif grouping == 'router' and not site.is_moe:
                router = seeded_router(
                    site.ffn.embed_dims, num_experts, router_type,
                    seed + index,
                    core_linear(site.ffn, 'fc1').weight.device)
                probe.group_fn = (lambda rows, expert_ids, router=router:
                                  router.logits(rows).argmax(1))
            elif grouping == 'router':
                probe.group_fn = lambda rows, expert_ids: expert_ids
            self.probes.append(probe)
        self._handles = []

    # ---------------------------------------------------------- k-means
    def fit_kmeans(self, max_points: int = 20000) -> None:
        """Fit each FFN's centroids on the inputs seen while
        :attr:`collecting_samples` was on, and group by them from now on."""
        for index, probe in enumerate(self.probes):
            if not probe.samples:
                raise RuntimeError(
                    f'no inputs of {probe.site.name} were collected for '
                    'k-means: run forward passes with collecting_samples on')
            points = torch.cat(probe.samples)[:max_points]
            centroids = kmeans(
                points, probe.num_groups, seed=self.seed + index)
            probe.group_fn = (lambda rows, expert_ids, centroids=centroids:
                              nearest_centroid(rows, centroids))
            probe.samples = []

    # ------------------------------------------------------------ hooks
    def _fc_called(self, probe: _SiteProbe, fc: str, rows: Tensor,
                   output: Tensor, expert_ids: Optional[Tensor]) -> None:
        rows = rows.detach().reshape(-1, rows.shape[-1])
        if fc == 'fc1':
            if self.collecting_samples:
                gen = torch.Generator().manual_seed(len(probe.samples))
                take = torch.randperm(
                    rows.shape[0],
                    generator=gen)[:self.samples_per_call].to(rows.device)
                probe.samples.append(rows[take].float())
                return
            if probe.group_fn is None:
                raise RuntimeError('k-means grouping needs fit_kmeans() first')
            probe._groups = probe.group_fn(rows, expert_ids)
        if self.collecting_samples or not output.requires_grad:
            return
        sums = probe.sums(self.half)[fc]
        groups = probe._groups

        def on_grad(grad):
            sums.add(rows, grad.reshape(-1, grad.shape[-1]), groups)

        output.register_hook(on_grad)

    def _attach(self, probe: _SiteProbe) -> None:
        ffn = probe.site.ffn
        if probe.site.is_moe:

            def on_expert_linear(fc, rows, counts, output):
                expert_ids = torch.repeat_interleave(
                    torch.arange(len(counts), device=rows.device),
                    torch.as_tensor(list(counts), device=rows.device))
                self._fc_called(probe, fc, rows, output, expert_ids)

            self._handles.append(watch_expert_linears(ffn, on_expert_linear))
            return
        for fc in FCS:

            def on_forward(module, args, output, fc=fc):
                self._fc_called(probe, fc, args[0], output, None)

            self._handles.append(
                core_linear(ffn, fc).register_forward_hook(on_forward))

    def __enter__(self) -> 'SplittingProbe':
        for probe in self.probes:
            self._attach(probe)
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class RoutingRecorder:
    """Each RMoE FFN's top-1 expert per token, as a map over the token grid.

    A forward pre-hook on every block with an RMoE FFN records the block's
    input shape ``[B, L, C]`` and ``hw_shape``; after a forward,
    :meth:`expert_maps` reshapes the FFN's :attr:`~RMoEFFN.last_routing` to
    ``[B, H, W]``. A leading class token (CvT's last stage: ``L = 1 + H W``)
    is left out.
    """

    def __init__(self, sites: List[FFNSite]):
        self.sites = [site for site in sites if site.is_moe]
        self._shapes: Dict[str, Tuple[int, int, Tuple[int, int]]] = {}
        self._handles = []

    def __enter__(self) -> 'RoutingRecorder':
        for site in self.sites:

            def pre_hook(module, args, site=site):
                x, hw_shape = args[0], tuple(args[1])
                self._shapes[site.name] = (x.shape[0], x.shape[1], hw_shape)

            self._handles.append(
                site.block_module.register_forward_pre_hook(pre_hook))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def expert_maps(self) -> Dict[str, Tensor]:
        """``name -> [B, H, W]`` top-1 expert of each patch token (long)."""
        maps = {}
        for site in self.sites:
            if site.name not in self._shapes:
                raise RuntimeError(f'{site.name} did not run (forward the '
                                   'backbone inside the recorder)')
            batch, length, (height, width) = self._shapes[site.name]
            extra = length - height * width
            if extra not in (0, 1):
                raise RuntimeError(
                    f'{site.name} saw {length} tokens per image for a '
                    f'{height}x{width} grid; expected H*W (+1 class token)')
            top1 = site.ffn.last_routing.expert_index[:, 0]
            maps[site.name] = top1.view(batch, length)[:, extra:].reshape(
                batch, height, width)
        return maps


@contextlib.contextmanager
def frozen_parameters(model: nn.Module):
    """Parameters with ``requires_grad=False`` inside (restored after):
    backward then computes activation gradients only."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for param, _ in flags:
        param.requires_grad_(False)
    try:
        yield model
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)
