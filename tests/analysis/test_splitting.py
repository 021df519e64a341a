"""The splitting score (rmoe_mm.analysis.splitting) and the hooks that feed
it (SplittingProbe), on constructed FFNs with known answers.

References: closed forms of the between-group term for tokens with
proportional gradients, and a naive loop of per-token weight gradients from
autograd (float64, 1e-6).
"""
import math

import pytest
import torch
from mmcv.cnn.bricks.transformer import FFN
from torch import nn

from rmoe_mm.analysis.moe_access import (core_linear, expert_weights,
                                         residual_bias, residual_weight)
from rmoe_mm.analysis.probes import (SplittingProbe, backbone_ffns,
                                     seeded_router)
from rmoe_mm.analysis.splitting import (GroupedGradientSums, kmeans,
                                        layer_score, moe_blocks_of,
                                        nearest_centroid, split_half_gain,
                                        splitting_gain, top_blocks)
from rmoe_mm.moe import RMoEFFN

C, H = 4, 8


class Block(nn.Module):

    def __init__(self, ffn):
        super().__init__()
        self.ffn = ffn


class Stage(nn.Module):

    def __init__(self, ffns):
        super().__init__()
        self.blocks = nn.ModuleList(Block(f) for f in ffns)


class Backbone(nn.Module):
    """The stages[i].blocks[j].ffn layout of Swin and CvT."""

    def __init__(self, *stages):
        super().__init__()
        self.stages = nn.ModuleList(Stage(s) for s in stages)


def dense_ffn(seed=0):
    torch.manual_seed(seed)
    return FFN(C, H, act_cfg=dict(type='GELU'), add_identity=False).double()


def parity_groups(site, rows):
    """Token t is in group t % 2 (tokens come in pairs)."""
    return torch.arange(rows.shape[0], device=rows.device) % 2


def run_probe(backbone,
              loss_fn,
              grouping=parity_groups,
              num_experts=2,
              batches=2):
    """Backward ``loss_fn(backbone)`` once per batch inside a probe."""
    sites = backbone_ffns(backbone)
    probe = SplittingProbe(sites, grouping, num_experts, dtype=torch.float64)
    with probe:
        for step in range(batches):
            probe.half = step % 2
            loss_fn(backbone).backward()
    return sites, probe


def gains(probe, index, estimator='plain'):
    site_probe = probe.probes[index]
    out = {}
    for fc in ('fc1', 'fc2'):
        a, b = site_probe.sums(0)[fc], site_probe.sums(1)[fc]
        if estimator == 'split-half':
            out[fc] = split_half_gain(a, b)
        else:
            both = GroupedGradientSums(
                a.num_groups, *a.sums.shape[1:], dtype=torch.float64)
            both.sums, both.counts = a.sums + b.sums, a.counts + b.counts
            both.sq_norms = a.sq_norms + b.sq_norms
            out[fc] = splitting_gain(both)
    return out


def signed_loss(signs_of_layer):
    """Every FFN sees the same input token N times; token t's output is
    weighted by sign[t % 2] of its layer: group gradients in a known ratio.
    """
    x = torch.randn(1, C, dtype=torch.float64).expand(16, C)
    v = torch.randn(C, dtype=torch.float64)

    def loss_fn(backbone):
        total = 0.
        for site, signs in zip(backbone_ffns(backbone), signs_of_layer):
            weight = torch.tensor(signs, dtype=torch.float64).repeat(8)
            total = total + ((site.ffn(x) @ v) * weight).mean()
        return total

    return loss_fn


def closed_form(alpha):
    """relative = between / (shared + between) for two equal groups with
    gradients g and alpha * g."""
    between = ((1 - alpha) / 2)**2
    shared = ((1 + alpha) / 2)**2
    return between / (shared + between)


@pytest.mark.parametrize('estimator', ['plain', 'split-half'])
def test_opposite_group_gradients_score_one(estimator):
    backbone = Backbone([dense_ffn()])
    _, probe = run_probe(backbone, signed_loss([(1., -1.)]))
    for gain in gains(probe, 0, estimator).values():
        assert gain.shared == pytest.approx(0, abs=1e-20)
        assert gain.between > 0
        assert gain.relative == pytest.approx(1, abs=1e-12)


@pytest.mark.parametrize('estimator', ['plain', 'split-half'])
def test_shared_gradient_scores_zero(estimator):
    backbone = Backbone([dense_ffn()])
    _, probe = run_probe(backbone, signed_loss([(1., 1.)]))
    for gain in gains(probe, 0, estimator).values():
        assert gain.shared > 0
        assert gain.relative == pytest.approx(0, abs=1e-12)


def test_layers_ranked_by_how_much_their_groups_disagree():
    # Group 1's gradient is alpha times group 0's, alpha = -1, 0.5, 0, 1:
    # scores 1, 0.1, 0.5, 0 in closed form; ranking: 0, 2, 1, 3.
    alphas = [-1., 0.5, 0., 1.]
    backbone = Backbone([dense_ffn(0), dense_ffn(1)],
                        [dense_ffn(2), dense_ffn(3)])
    _, probe = run_probe(backbone,
                         signed_loss([(1., alpha) for alpha in alphas]))
    scores = {}
    for index, (stage, block) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        scores[stage, block] = layer_score(list(gains(probe, index).values()))
        assert scores[stage, block] == pytest.approx(
            closed_form(alphas[index]), abs=1e-12)
    assert top_blocks(scores, 2) == [(0, 0), (1, 0)]
    assert top_blocks(scores, 1, lowest=True) == [(1, 1)]
    assert moe_blocks_of(top_blocks(scores, 2), [2, 2]) == [[0], [0]]


def random_sums(x, delta, groups, num_groups=3):
    sums = GroupedGradientSums(
        num_groups, delta.shape[1], x.shape[1], dtype=torch.float64)
    sums.add(x, delta, groups)
    return sums


#: The rescalings each normalisation claims not to see.
INVARIANCES = {
    'energy': ('inputs x 10', 'gradients x 1e-3', 'inputs replicated',
               'outputs replicated'),
    'total': ('inputs x 10', 'gradients x 1e-3', 'inputs replicated',
              'outputs replicated'),
    'params': ('inputs replicated', 'outputs replicated'),
}


@pytest.mark.parametrize('normalisation', sorted(INVARIANCES))
def test_score_invariant_to_the_rescalings_its_normalisation_claims(
        normalisation):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(60, 5, generator=gen, dtype=torch.float64)
    delta = torch.randn(60, 7, generator=gen, dtype=torch.float64)
    delta[:20] += 0.5  # some structure between groups
    groups = torch.arange(60) % 3
    variants = {
        'inputs x 10': (10 * x, delta),
        'gradients x 1e-3': (x, 1e-3 * delta),  # a loss scale
        'inputs replicated': (torch.cat([x, x], 1), delta),  # 2x wider
        'outputs replicated': (x, torch.cat([delta] * 3, 1)),  # 3x wider
    }

    def score(xv, dv):
        half = torch.arange(60) < 30
        plain = splitting_gain(random_sums(xv, dv, groups))
        split = split_half_gain(
            random_sums(xv[half], dv[half], groups[half]),
            random_sums(xv[~half], dv[~half], groups[~half]))
        return plain.score(normalisation), split.score(normalisation)

    reference = score(x, delta)
    assert all(0 < value for value in reference)
    for name in INVARIANCES[normalisation]:
        assert score(*variants[name]) == pytest.approx(
            reference, rel=1e-10), name
    if normalisation == 'params':  # the gain per weight follows the scale
        assert score(*variants['inputs x 10'])[0] == pytest.approx(
            100 * reference[0], rel=1e-10)


def test_score_of_ffn_unchanged_by_loss_scale():
    backbone = Backbone([dense_ffn()])
    x = torch.randn(32, C, dtype=torch.float64)
    scores = []
    for scale in (1., 1000.):
        _, probe = run_probe(
            backbone, lambda b: scale * b.stages[0].blocks[0].ffn(x).sum())
        scores.append(layer_score(list(gains(probe, 0).values()), 'energy'))
    assert scores[1] == pytest.approx(scores[0], rel=1e-10)


def test_split_half_removes_the_noise_of_random_groups():
    # Gradients independent of the groups: the plain estimate sees a
    # between-group term of about (G - 1) sigma^2 / N, split-half about 0.
    gen = torch.Generator().manual_seed(1)
    halves = []
    for _ in range(2):
        x = torch.randn(400, 6, generator=gen, dtype=torch.float64) + 1
        delta = torch.randn(400, 5, generator=gen, dtype=torch.float64) + 1
        halves.append(
            random_sums(x, delta, torch.randint(8, (400, ), generator=gen), 8))
    plain = GroupedGradientSums(8, 5, 6, dtype=torch.float64)
    plain.sums = halves[0].sums + halves[1].sums
    plain.counts = halves[0].counts + halves[1].counts
    plain.sq_norms = halves[0].sq_norms + halves[1].sq_norms
    gain = splitting_gain(plain)
    noise = (gain.energy - gain.shared) * (8 - 1) / (800 - 1)
    assert gain.between == pytest.approx(noise, rel=0.3)
    assert abs(split_half_gain(*halves).between) < 0.3 * gain.between


def naive_group_means(ffn, x, groups, num_groups, fc):
    """mean over group c of the per-token weight gradient, token by token
    (autograd of each token's own loss; reference for the hooks)."""
    grads = [[] for _ in range(num_groups)]
    for t in range(x.shape[0]):
        ffn.zero_grad()
        param = weight_param(ffn, fc, groups[t])
        (out_of(ffn, x[t:t + 1]) * torch.arange(1., C + 1).double()).sum() \
            .backward()
        grad = param.grad if not isinstance(ffn, RMoEFFN) else \
            param.grad[groups[t]]
        grads[groups[t]].append(grad.clone())
    return [torch.stack(g).mean(0) if g else None for g in grads]


def weight_param(ffn, fc, expert):
    if isinstance(ffn, RMoEFFN):
        return ffn.residual.get_parameter(f'{fc}_weight') if hasattr(
            ffn.residual,
            f'{fc}_weight') else ffn.residual.get_submodule(fc).weight
    return core_linear(ffn, fc).weight


def out_of(ffn, x):
    out = ffn(x)
    return out - x if getattr(ffn, 'add_identity', False) else out


def rmoe_ffn():
    torch.manual_seed(0)
    return RMoEFFN(
        C,
        H,
        act_cfg=dict(type='GELU'),
        num_experts=3,
        residual_std=0.1,
        add_identity=False).double().eval()


@pytest.mark.parametrize('kind', ['dense', 'rmoe'])
def test_group_means_equal_naive_per_token_loop(kind):
    ffn = dense_ffn() if kind == 'dense' else rmoe_ffn()
    backbone = Backbone([ffn])
    x = torch.randn(24, C, dtype=torch.float64)
    weights = torch.arange(1., C + 1).double()
    sites = backbone_ffns(backbone)
    probe = SplittingProbe(
        sites, 'router', num_experts=3, seed=5, dtype=torch.float64)
    with probe:
        (out_of(ffn, x) * weights).sum(1).mean().backward()
    if kind == 'dense':
        router = seeded_router(C, 3, 'linear', 5, 'cpu').double()
        groups = router.logits(x).argmax(1)
    else:
        groups = ffn.last_routing.expert_index[:, 0]
    for fc in ('fc1', 'fc2'):
        sums = probe.probes[0].sums(0)[fc]
        expected = naive_group_means(ffn, x, groups.tolist(), 3, fc)
        assert sums.counts.tolist() == torch.bincount(
            groups, minlength=3).tolist()
        for group, mean in enumerate(sums.group_means()):
            if expected[group] is not None:
                torch.testing.assert_close(
                    mean, expected[group], rtol=0, atol=1e-6)


@pytest.mark.parametrize('rank', [None, 2])
def test_residual_accessor_reads_full_and_low_rank_residuals(rank):
    torch.manual_seed(0)
    ffn = RMoEFFN(
        C,
        H,
        act_cfg=dict(type='GELU'),
        num_experts=3,
        residual_std=0.1,
        residual_rank=rank,
        add_identity=False).double().eval()
    for fc, (out, inp) in (('fc1', (H, C)), ('fc2', (C, H))):
        child = getattr(ffn.residual, fc)
        expected = child.weight if rank is None else torch.bmm(
            child.weight_a, child.weight_b)
        assert residual_weight(ffn, fc).shape == (3, out, inp)
        torch.testing.assert_close(residual_weight(ffn, fc), expected)
        assert residual_bias(ffn, fc) is child.bias
        weight, bias = expert_weights(ffn, fc)
        torch.testing.assert_close(weight,
                                   core_linear(ffn, fc).weight + expected)
        torch.testing.assert_close(bias,
                                   core_linear(ffn, fc).bias + child.bias)


def test_watching_expert_linears_sees_every_row_and_stops():
    ffn = rmoe_ffn()
    x = torch.randn(20, C, dtype=torch.float64)
    probe = SplittingProbe(
        backbone_ffns(Backbone([ffn])), 'router', dtype=torch.float64)
    with probe:
        ffn(x).sum().backward()
    sums = probe.probes[0].sums(0)
    for fc in ('fc1', 'fc2'):
        assert sums[fc].counts.sum() == 20
        assert not getattr(ffn.residual, fc)._forward_hooks
    ffn(x)  # hooks removed: nothing is recorded after the probe
    assert probe.probes[0].sums(0)['fc1'].counts.sum() == 20


def test_kmeans_finds_separated_clusters_deterministically():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[5., 0.], [-5., 0.], [0., 5.]])
    labels = torch.arange(90) % 3
    points = centres[labels] + 0.1 * torch.randn(90, 2, generator=gen)
    found = kmeans(points, 3, seed=3)
    assign = nearest_centroid(points, found)
    # one cluster per centre, whatever the numbering
    for cluster in range(3):
        assert len(set(labels[assign == cluster].tolist())) == 1
    torch.testing.assert_close(kmeans(points, 3, seed=3), found)


def test_plain_gain_matches_definition():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    delta = torch.randn(30, 2, generator=gen, dtype=torch.float64)
    groups = torch.randint(3, (30, ), generator=gen)
    gain = splitting_gain(random_sums(x, delta, groups))
    per_token = 30 * torch.einsum('no,ni->noi', delta, x)
    mean = per_token.mean(0)
    between = sum(
        float((groups == c).sum()) / 30 *
        (per_token[groups == c].mean(0) - mean).pow(2).sum() for c in range(3))
    assert gain.shared == pytest.approx(float(mean.pow(2).sum()), rel=1e-12)
    assert gain.between == pytest.approx(float(between), rel=1e-12)
    assert not math.isnan(gain.relative)
