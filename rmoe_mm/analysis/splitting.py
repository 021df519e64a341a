"""Which FFNs gain most from becoming experts: a first-order splitting score.

For one linear layer ``y = W x + b`` of an FFN, token ``t`` of a batch with
``N_b`` tokens contributes the weight gradient ``g_t = N_b delta_t x_t^T``
(``delta_t = dL/dy_t``), scaled so that the mean of ``g_t`` over a batch is
the batch loss gradient. With the tokens split into groups ``c`` (``n_c`` of
``N`` tokens each), a gradient step of size ``eta`` lowers the loss, to first
order, by

- ``eta ||mean g||^2`` with one shared weight (the dense layer), and
- ``eta sum_c (n_c / N) ||mean_c g||^2`` when each group has its own weight
  (experts, each stepping along its own tokens' mean gradient).

Their difference, the *between-group* term ``sum_c (n_c / N) ||mean_c g -
mean g||^2``, is what splitting the layer buys. The score of a layer divides
it by the second quantity (``shared + between``): the fraction of the first-
order gain of per-group weights that a shared weight cannot get. It lies in
[0, 1] and does not change when the layer's inputs, its output gradients
(the loss scale) or its width (units replicated) are scaled, so layers of
different widths and depths compare.

Per-group means are sums of ``delta^T x`` over each group's tokens: one
matmul per group and batch (:class:`GroupedGradientSums`); no per-token
gradient matrix is formed.

Sampling noise inflates the plain between-group term by about ``(G - 1)
sigma^2 / N`` (``sigma^2``: per-token gradient variance), which favours layers
with few tokens (the deep stages). :func:`split_half_gain` removes that bias:
it accumulates two independent halves of the batches and replaces every
squared norm by the inner product of the two halves' estimates.
"""
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

#: How the gain is estimated from the accumulated sums.
ESTIMATORS = ('split-half', 'plain')


class GroupedGradientSums:
    """Per-group sums of the per-token weight gradients of one linear layer.

    ``sums[c] = sum over tokens t in group c of scale * delta_t x_t^T``
    (``[G, out, in]``) and ``counts[c]`` (tokens of group c), accumulated
    over any number of :meth:`add` calls.

    Args:
        num_groups (int): Number of groups G.
        out_features (int): Output channels of the layer.
        in_features (int): Input channels of the layer.
        device: Where the sums live. Default: CPU.
        dtype: Accumulation dtype. Default: float32.
    """

    def __init__(self,
                 num_groups: int,
                 out_features: int,
                 in_features: int,
                 device=None,
                 dtype: torch.dtype = torch.float32):
        self.num_groups = num_groups
        self.sums = torch.zeros(
            num_groups, out_features, in_features, device=device, dtype=dtype)
        self.counts = torch.zeros(
            num_groups, device=device, dtype=torch.float64)
        #: ``sum_t ||g_t||^2`` per group: ``||g_t||_F = ||delta_t|| ||x_t||``
        #: for a rank-1 matrix, so this needs no matrix either.
        self.sq_norms = torch.zeros(
            num_groups, device=device, dtype=torch.float64)

    @torch.no_grad()
    def add(self,
            inputs: Tensor,
            grads: Tensor,
            groups: Tensor,
            scale: Optional[float] = None) -> None:
        """Add tokens ``inputs [N, in]`` with output gradients ``grads
        [N, out]`` in ``groups [N]`` (long, in ``[0, G)``).

        Args:
            scale (float, optional): Factor on every ``delta_t x_t^T``.
                Default: ``N``, so that a batch's mean per-token gradient is
                the gradient of its (token-mean) loss.
        """
        num = inputs.shape[0]
        if grads.shape[0] != num or groups.shape != (num, ):
            raise ValueError(
                f'inputs {tuple(inputs.shape)}, grads {tuple(grads.shape)} '
                f'and groups {tuple(groups.shape)} must have one row per '
                'token')
        if num == 0:
            return
        scale = float(num if scale is None else scale)
        groups = groups.to(self.sums.device)
        order = torch.argsort(groups, stable=True)
        counts = torch.bincount(groups, minlength=self.num_groups)
        if counts.numel() > self.num_groups:
            raise ValueError(f'group ids must be < {self.num_groups}, got '
                             f'{int(groups.max())}')
        inputs = inputs.to(self.sums)[order]
        grads = grads.to(self.sums)[order] * scale
        token_sq = grads.double().pow(2).sum(1) * inputs.double().pow(2).sum(1)
        self.sq_norms.index_add_(0, groups[order], token_sq)
        start = 0
        for group, count in enumerate(counts.tolist()):
            if count:
                end = start + count
                self.sums[group].addmm_(grads[start:end].t(),
                                        inputs[start:end])
                start = end
        self.counts += counts.to(self.counts)

    @property
    def num_tokens(self) -> float:
        return float(self.counts.sum())

    def group_means(self) -> Tensor:
        """``mean_c g`` per group ``[G, out, in]`` (zeros for empty groups).
        """
        counts = self.counts.clamp_min(1).to(self.sums)
        return self.sums / counts[:, None, None]

    def mean(self) -> Tensor:
        """``mean g`` over all tokens ``[out, in]``."""
        return self.sums.sum(0) / max(self.num_tokens, 1.)


#: What the between-group term is divided by (see :meth:`SplitGain.score`).
NORMALISATIONS = ('energy', 'total', 'params')


@dataclass
class SplitGain:
    """First-order loss decreases per unit step size of one linear layer.

    Attributes:
        shared (float): ``||mean g||^2``, the gain of one shared weight.
        between (float): ``sum_c (n_c / N) ||mean_c g - mean g||^2``, what
            per-group weights add.
        energy (float): ``mean_t ||g_t||^2``, the per-token gradients'
            second moment (``shared + between +`` the within-group spread).
        num_params (int): Weights of the layer (``out * in``).
    """

    shared: float
    between: float
    energy: float = math.nan
    num_params: int = 0

    @property
    def total(self) -> float:
        """``sum_c (n_c / N) ||mean_c g||^2``: the gain of per-group weights.
        """
        return self.shared + self.between

    @property
    def relative(self) -> float:
        """``between / total`` (NaN without a gradient)."""
        return _ratio(self.between, self.total)

    def score(self, normalisation: str = 'energy') -> float:
        """The between-group term, normalised.

        - ``'energy'``: ``between / mean_t ||g_t||^2``, the share of the
          per-token gradients' second moment that the group means carry;
        - ``'total'``: ``between / (shared + between)`` (:attr:`relative`);
        - ``'params'``: ``between / num_params``, the gain per weight.
        """
        if normalisation == 'energy':
            return _ratio(self.between, self.energy)
        if normalisation == 'total':
            return self.relative
        if normalisation == 'params':
            return _ratio(self.between, self.num_params)
        raise ValueError(f'normalisation must be one of {NORMALISATIONS}, '
                         f'got {normalisation!r}')


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def _energy(*sums: GroupedGradientSums) -> float:
    tokens = sum(s.num_tokens for s in sums)
    return float(sum(s.sq_norms.sum() for s in sums)) / max(tokens, 1.)


def splitting_gain(sums: GroupedGradientSums) -> SplitGain:
    """The plug-in (plain) estimate from one set of sums.

    Biased upwards by sampling noise (see the module docstring).
    """
    mean = sums.mean()
    between = 0.
    total = sums.num_tokens
    for group_mean, count in zip(sums.group_means(), sums.counts.tolist()):
        if count:
            between += count / total * float(
                (group_mean - mean).double().pow(2).sum())
    return SplitGain(
        shared=float(mean.double().pow(2).sum()),
        between=between,
        energy=_energy(sums),
        num_params=sums.sums[0].numel())


def split_half_gain(half_a: GroupedGradientSums,
                    half_b: GroupedGradientSums) -> SplitGain:
    """The estimate from two independent halves of the batches.

    Every squared norm ``||v||^2`` of the plain estimate becomes ``<v_a,
    v_b>``, the inner product of the two halves' estimates, whose
    expectation is the squared norm of the population quantity: the noise
    of the two halves is independent and averages out instead of adding up.
    Groups seen in only one half are left out (and the weights ``n_c / N``
    renormalised over the others). ``shared`` and ``between`` may come out
    slightly negative when their true value is about 0; ``energy`` (no
    squared mean) uses both halves as they are.
    """
    if half_a.sums.shape != half_b.sums.shape:
        raise ValueError('the two halves must have the same shape, got '
                         f'{tuple(half_a.sums.shape)} and '
                         f'{tuple(half_b.sums.shape)}')
    if not half_a.num_tokens or not half_b.num_tokens:
        raise ValueError('the split-half estimate needs tokens in both '
                         'halves (at least 2 batches)')
    mean_a, mean_b = half_a.mean().double(), half_b.mean().double()
    means_a = half_a.group_means().double()
    means_b = half_b.group_means().double()
    counts = half_a.counts + half_b.counts
    both = (half_a.counts > 0) & (half_b.counts > 0)
    weights = torch.where(both, counts, torch.zeros_like(counts))
    weights = weights / weights.sum().clamp_min(1)
    between = 0.
    for group in torch.nonzero(both).flatten().tolist():
        between += float(weights[group]) * float(
            ((means_a[group] - mean_a) * (means_b[group] - mean_b)).sum())
    return SplitGain(
        shared=float((mean_a * mean_b).sum()),
        between=between,
        energy=_energy(half_a, half_b),
        num_params=half_a.sums[0].numel())


def layer_score(gains: Sequence[SplitGain],
                normalisation: str = 'energy') -> float:
    """An FFN's score: the mean of its linear layers' normalised gains.

    Each layer's ratio is scale-free on its own, so the mean keeps that
    (a sum of the raw terms would be dominated by the layer with the larger
    gradients).
    """
    values = [gain.score(normalisation) for gain in gains]
    return sum(values) / len(values) if values else math.nan


# ------------------------------------------------------------ grouping


def kmeans(points: Tensor,
           num_clusters: int,
           iters: int = 25,
           seed: int = 0) -> Tensor:
    """Lloyd's k-means with k-means++ seeding; returns centroids ``[k, C]``.

    Deterministic for a given ``seed``; clusters that run empty are re-seeded
    at the point farthest from its centroid.
    """
    if points.dim() != 2 or points.shape[0] < num_clusters:
        raise ValueError(f'k-means with {num_clusters} clusters needs at '
                         f'least {num_clusters} points [N, C], got '
                         f'{tuple(points.shape)}')
    gen = torch.Generator().manual_seed(seed)
    points = points.float()
    first = int(torch.randint(points.shape[0], (1, ), generator=gen))
    centroids = [points[first]]
    dist = (points - centroids[0]).pow(2).sum(1)
    for _ in range(1, num_clusters):
        probs = (dist / dist.sum()).cpu() if dist.sum() > 0 else None
        index = int(torch.multinomial(probs, 1, generator=gen)) \
            if probs is not None else int(
                torch.randint(points.shape[0], (1, ), generator=gen))
        centroids.append(points[index])
        dist = torch.minimum(dist, (points - points[index]).pow(2).sum(1))
    centroids = torch.stack(centroids)
    for _ in range(iters):
        assign = nearest_centroid(points, centroids)
        sizes = torch.bincount(assign, minlength=num_clusters)
        new = torch.zeros_like(centroids).index_add_(0, assign, points)
        new /= sizes.clamp_min(1)[:, None].to(new)
        empty = torch.nonzero(sizes == 0).flatten()
        if empty.numel():
            # Re-seed empty clusters at the points worst served now.
            far = (points - centroids[assign]).pow(2).sum(1).topk(
                empty.numel()).indices
            new[empty] = points[far]
        elif torch.allclose(new, centroids):
            break
        centroids = new
    return centroids


def nearest_centroid(points: Tensor, centroids: Tensor) -> Tensor:
    """Index of the nearest centroid of every point ``[N]`` (long)."""
    return torch.cdist(points.float(), centroids.float()).argmin(1)


# ------------------------------------------------------ choosing blocks

Block = Tuple[int, int]


def top_blocks(scores: Dict[Block, float],
               num: int,
               lowest: bool = False) -> List[Block]:
    """The ``num`` (stage, block) with the highest scores (NaN last), or the
    lowest ones with ``lowest=True``; ties keep block order."""
    if not 0 <= num <= len(scores):
        raise ValueError(f'cannot choose {num} of {len(scores)} FFNs')

    def key(item):
        value = item[1]
        if math.isnan(value):
            return math.inf
        return value if lowest else -value

    ranked = sorted(scores.items(), key=key)
    return [block for block, _ in ranked[:num]]


def moe_blocks_of(blocks: Sequence[Block],
                  depths: Sequence[int]) -> List[List[int]]:
    """``moe_blocks`` (one sorted list per stage) naming ``blocks``."""
    lists: List[List[int]] = [[] for _ in depths]
    for stage, block in blocks:
        if not 0 <= stage < len(depths) or not 0 <= block < depths[stage]:
            raise ValueError(f'block ({stage}, {block}) is not in a backbone '
                             f'with depths {list(depths)}')
        lists[stage].append(block)
    return [sorted(stage) for stage in lists]
