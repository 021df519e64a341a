"""Token grouping, capacity and combine against plain Python loops."""
import math

import pytest
import torch

from rmoe_mm.moe.dispatch import (combine, expert_capacity, gather_rows,
                                  plan_dispatch)


def loop_plan(expert_index, num_experts, capacity):
    """Per expert, the kept (token, choice) in choice-major, token order."""
    num_tokens, top_k = expert_index.shape
    per_expert = [[] for _ in range(num_experts)]
    requested = [0] * num_experts
    for choice in range(top_k):
        for token in range(num_tokens):
            expert = int(expert_index[token, choice])
            requested[expert] += 1
            if capacity is None or len(per_expert[expert]) < capacity:
                per_expert[expert].append((token, choice))
    return per_expert, requested


@pytest.mark.parametrize('top_k, capacity', [(1, None), (2, None), (1, 3),
                                             (2, 4), (3, 1)])
def test_plan_matches_loop(top_k, capacity):
    torch.manual_seed(0)
    num_tokens, num_experts = 29, 5
    expert_index = torch.stack(
        [torch.randperm(num_experts)[:top_k] for _ in range(num_tokens)])
    plan = plan_dispatch(expert_index, num_experts, capacity)
    per_expert, requested = loop_plan(expert_index, num_experts, capacity)
    assert plan.counts == [len(kept) for kept in per_expert]
    assert plan.requested.tolist() == requested
    assert plan.num_dropped.item() == sum(requested) - sum(plan.counts)
    expected = [pair for kept in per_expert for pair in kept]
    assert list(zip(plan.token_index.tolist(),
                    plan.choice_index.tolist())) == expected


def test_capacity_formula():
    assert expert_capacity(100, 8, 1, None) is None
    assert expert_capacity(100, 8, 1, 0) is None
    assert expert_capacity(100, 8, 1, 1.25) == math.ceil(1.25 * 100 / 8)
    assert expert_capacity(100, 8, 2, 1.0) == 25


def random_plan(num_tokens=9, num_experts=3, top_k=2, capacity=4):
    torch.manual_seed(0)
    expert_index = torch.stack(
        [torch.randperm(num_experts)[:top_k] for _ in range(num_tokens)])
    return plan_dispatch(expert_index, num_experts, capacity)


@pytest.mark.parametrize('capacity', [None, 2])
@pytest.mark.parametrize('alignment', ['stopgrad', 'weighted'])
def test_combine_matches_paper_formula(alignment, capacity):
    """fp64, tolerance 1e-12; with capacity 2 some tokens lose both choices."""
    plan = random_plan(capacity=capacity)
    num_rows = len(plan.token_index)
    rows = torch.randn(num_rows, 3, dtype=torch.float64, requires_grad=True)
    gates = torch.rand(num_rows, dtype=torch.float64, requires_grad=True)
    seed = torch.randn(9, 3, dtype=torch.float64)
    out = combine(rows, gates, plan, alignment)
    grads = torch.autograd.grad((out * seed).sum(), (rows, gates))

    expected = [torch.zeros(3, dtype=torch.float64) for _ in range(9)]
    for row, token in enumerate(plan.token_index.tolist()):
        g, e = gates[row], rows[row]
        if alignment == 'stopgrad':
            expected[token] = expected[token] + ((1 - g) * e).detach() + g * e
        else:
            expected[token] = expected[token] + g * e
    expected = torch.stack(expected)
    expected_grads = torch.autograd.grad((expected * seed).sum(),
                                         (rows, gates))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, rtol=0, atol=1e-12)
    if capacity:
        served = set(plan.token_index.tolist())
        assert len(served) < 9
        for token in set(range(9)) - served:
            assert out[token].abs().sum() == 0


@pytest.mark.parametrize('capacity', [None, 2])
def test_gather_rows_forward_and_backward_match_indexing(capacity):
    plan = random_plan(capacity=capacity)
    tokens = torch.randn(9, 3, dtype=torch.float64, requires_grad=True)
    seed = torch.randn(len(plan.token_index), 3, dtype=torch.float64)
    rows = gather_rows(tokens, plan)
    grad, = torch.autograd.grad((rows * seed).sum(), tokens)
    expected_rows = torch.stack([tokens[t] for t in plan.token_index.tolist()])
    expected, = torch.autograd.grad((expected_rows * seed).sum(), tokens)
    torch.testing.assert_close(rows, expected_rows, rtol=0, atol=0)
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-12)


def test_stopgrad_combine_value_is_exact():
    plan = plan_dispatch(torch.tensor([[2], [0], [1], [2]]), 3)
    rows = torch.randn(4, 3)
    gates = torch.tensor([0.3, 0.7, 0.123, 0.999])
    out = combine(rows, gates, plan, 'stopgrad')
    assert torch.equal(out[plan.token_index], rows)
