"""Router and balance losses against their textbook formulas."""
import math

import pytest
import torch
import torch.nn.functional as F

from rmoe_mm.moe import TopKRouter, importance_loss, load_loss


def test_importance_loss_is_squared_coefficient_of_variation():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.25, 0.25]])
    importance = [1.2, 0.45, 0.35]
    mean = sum(importance) / 3
    var = sum((i - mean)**2 for i in importance) / 2  # unbiased, as Tutel
    assert importance_loss(probs).item() == pytest.approx(var / mean**2)


def test_importance_loss_is_zero_when_balanced_or_single_expert():
    assert importance_loss(torch.full((6, 4), 0.25)).item() == 0
    assert importance_loss(torch.ones(5, 1)).item() == 0


def test_load_loss_is_num_experts_times_sum_of_fraction_times_mean_prob():
    probs = torch.tensor([[0.6, 0.4], [0.3, 0.7], [0.8, 0.2]])
    first_choice = torch.tensor([[0], [1], [0]])
    fraction = [2 / 3, 1 / 3]
    mean_prob = [1.7 / 3, 1.3 / 3]
    expected = 2 * (fraction[0] * mean_prob[0] + fraction[1] * mean_prob[1])
    assert load_loss(probs, first_choice).item() == pytest.approx(expected)


def test_linear_router_top2_gates_are_renormalised_softmax():
    torch.manual_seed(0)
    router = TopKRouter(5, 4, top_k=2, gate_noise=0.)
    x = torch.randn(7, 5)
    routing = router(x)
    probs = torch.softmax(x @ router.gate.weight.t(), -1)
    top, index = probs.topk(2, -1)
    torch.testing.assert_close(routing.probs, probs)
    torch.testing.assert_close(routing.expert_index, index)
    torch.testing.assert_close(routing.gates, top / top.sum(-1, keepdim=True))


def test_cosine_router_is_scaled_cosine_similarity():
    torch.manual_seed(0)
    router = TopKRouter(
        5, 3, router_type='cosine', gate_noise=0., cosine_proj_dims=4)
    x = torch.randn(6, 5)
    projected = router.projector(x)
    cos = F.cosine_similarity(
        projected[:, None, :], router.sim_matrix.t()[None], dim=-1)
    logits = cos / 0.5  # temperature starts at 0.5
    torch.testing.assert_close(router.logits(x), logits)
    routing = router(x)
    routing.gates.sum().backward()
    assert router.temperature.grad is not None
    assert router.sim_matrix.grad.abs().sum() > 0


def test_gate_noise_defaults_to_one_over_num_experts():
    assert TopKRouter(4, 8).gate_noise == pytest.approx(1 / 8)
    assert TopKRouter(4, 8, gate_noise=0.).gate_noise == 0


def test_routing_runs_in_fp32_under_bf16_autocast():
    router = TopKRouter(8, 4)
    x = torch.randn(10, 8)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        routing = router(x.bfloat16())
    assert routing.probs.dtype == torch.float32
    assert routing.gates.dtype == torch.float32
    assert math.isclose(routing.probs.sum().item(), 10, rel_tol=1e-5)
