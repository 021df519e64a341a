"""The splitting score of every FFN of a model, measured on batches of data.

Runs the model's loss forward and backward on each batch (eval mode: no
dropout, drop path or gate noise; BatchNorm uses its running statistics, so
the score is that of the trained function), with
:class:`~.probes.SplittingProbe` collecting per-group gradient sums of every
FFN. Parameters are frozen meanwhile: only activation gradients are needed.
"""
import math
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch
from mmengine.logging import print_log
from torch import nn

from .moe_access import FCS
from .probes import SplittingProbe, backbone_ffns, frozen_parameters
from .splitting import (NORMALISATIONS, SplitGain, layer_score,
                        split_half_gain, splitting_gain)


@dataclass
class FFNScore:
    """The splitting score of one FFN and what it is made of."""

    name: str
    label: str
    stage: int
    block: int
    is_moe: bool
    num_groups: int
    #: Tokens of each group over all batches.
    group_sizes: List[int]
    #: ``gains[estimator][fc]``.
    gains: Dict[str, Dict[str, SplitGain]] = field(default_factory=dict)

    def score(self,
              estimator: str = 'split-half',
              normalisation: str = 'energy') -> float:
        """See :func:`~.splitting.layer_score`."""
        return layer_score(list(self.gains[estimator].values()), normalisation)

    def to_dict(self) -> dict:
        out = dict(
            name=self.name,
            label=self.label,
            stage=self.stage,
            block=self.block,
            is_moe=self.is_moe,
            num_groups=self.num_groups,
            group_sizes=self.group_sizes,
            num_tokens=sum(self.group_sizes))
        for estimator, gains in self.gains.items():
            out[estimator] = dict(
                score={
                    norm: _finite(self.score(estimator, norm))
                    for norm in NORMALISATIONS
                },
                **{
                    fc:
                    dict(
                        shared=gain.shared,
                        between=gain.between,
                        energy=gain.energy,
                        num_params=gain.num_params)
                    for fc, gain in gains.items()
                })
        return out


def _finite(value: float) -> Optional[float]:
    return None if math.isnan(value) else value


def _loss(model: nn.Module, batch) -> torch.Tensor:
    data = model.data_preprocessor(batch, True)
    losses = model(**data, mode='loss')
    loss, _ = model.parse_losses(losses)
    return loss


def _progress(tag: str, step: int, total: int, start: float,
              loss: float) -> None:
    elapsed = time.time() - start
    eta = elapsed / step * (total - step)
    print_log(
        f'[{tag}] batch {step}/{total}  loss {loss:.4f}  '
        f'elapsed {elapsed:.0f} s  ETA {eta:.0f} s',
        logger='current')


def measure_splitting(model: nn.Module,
                      batches: Sequence,
                      grouping: str = 'router',
                      num_experts: int = 8,
                      router_type: str = 'linear',
                      seed: int = 0,
                      kmeans_points: int = 20000,
                      dtype: torch.dtype = torch.float32,
                      tag: str = 'splitting') -> List[FFNScore]:
    """Splitting scores of every FFN of ``model.backbone`` on ``batches``.

    Batches alternate between the two halves of the split-half estimate;
    the plain estimate uses both together. See
    :class:`~.probes.SplittingProbe` for ``grouping``, ``num_experts``,
    ``router_type`` and ``seed``.

    Returns:
        One :class:`FFNScore` per FFN, in block order.
    """
    if len(batches) < 2:
        raise ValueError('the splitting score needs at least 2 batches (two '
                         f'halves), got {len(batches)}')
    model.eval()
    sites = backbone_ffns(model.backbone)
    probe = SplittingProbe(sites, grouping, num_experts, router_type, seed,
                           dtype)
    with probe, frozen_parameters(model):
        if grouping == 'kmeans':
            probe.collecting_samples = True
            probe.samples_per_call = max(1, kmeans_points // len(batches))
            with torch.no_grad():
                for batch in batches:
                    inputs = model.data_preprocessor(batch, True)['inputs']
                    model.backbone(inputs)
            probe.collecting_samples = False
            probe.fit_kmeans(kmeans_points)
        start = time.time()
        for step, batch in enumerate(batches):
            probe.half = step % 2
            with torch.enable_grad():
                loss = _loss_with_input_grad(model, batch)
                loss.backward()
            _progress(tag, step + 1, len(batches), start, float(loss.detach()))
    scores = []
    for site_probe in probe.probes:
        site = site_probe.site
        half_a, half_b = site_probe.sums(0), site_probe.sums(1)
        gains = {'split-half': {}, 'plain': {}}
        for fc in FCS:
            a, b = half_a[fc], half_b[fc]
            gains['split-half'][fc] = split_half_gain(a, b)
            a.sums += b.sums  # both halves together, for the plain estimate
            a.counts += b.counts
            a.sq_norms += b.sq_norms
            gains['plain'][fc] = splitting_gain(a)
        sizes = [int(c) for c in half_a['fc1'].counts.tolist()]
        scores.append(
            FFNScore(site.name, site.label, site.stage, site.block,
                     site.is_moe, site_probe.num_groups, sizes, gains))
    return scores


def _loss_with_input_grad(model: nn.Module, batch) -> torch.Tensor:
    """The loss of ``batch`` with the input image requiring grad, so that
    backward reaches the activations while every parameter is frozen."""
    data = model.data_preprocessor(batch, True)
    data['inputs'] = data['inputs'].detach().requires_grad_(True)
    losses = model(**data, mode='loss')
    loss, _ = model.parse_losses(losses)
    return loss


@torch.no_grad()
def mean_loss(model: nn.Module, batches: Sequence) -> float:
    """Mean training loss of ``model`` (eval mode) over ``batches``."""
    model.eval()
    return sum(float(_loss(model, b)) for b in batches) / len(batches)
