"""Token grouping, capacity and combine against plain Python loops."""
import math

import pytest
import torch

from rmoe_mm.moe.dispatch import combine, expert_capacity, plan_dispatch


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
    expert_index = torch.stack([
        torch.randperm(num_experts)[:top_k] for _ in range(num_tokens)
    ])
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


@pytest.mark.parametrize('alignment', ['stopgrad', 'weighted'])
def test_combine_matches_paper_formula(alignment):
    torch.manual_seed(0)
    rows = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    gates = torch.rand(6, dtype=torch.float64, requires_grad=True)
    token_index = torch.tensor([2, 0, 2, 3, 0, 2])
    seed = torch.randn(5, 3, dtype=torch.float64)
    out = combine(rows, gates, token_index, 5, alignment)
    grads = torch.autograd.grad((out * seed).sum(), (rows, gates))

    expected = [torch.zeros(3, dtype=torch.float64) for _ in range(5)]
    for row, token in enumerate(token_index.tolist()):
        g, e = gates[row], rows[row]
        if alignment == 'stopgrad':
            expected[token] = expected[token] + ((1 - g) * e).detach() + g * e
        else:
            expected[token] = expected[token] + g * e
    expected = torch.stack(expected)
    expected_grads = torch.autograd.grad((expected * seed).sum(), (rows, gates))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, rtol=0, atol=1e-12)
    assert out[1].abs().sum() == 0 and out[4].abs().sum() == 0


def test_stopgrad_combine_value_is_exact():
    rows = torch.randn(4, 3)
    gates = torch.tensor([0.3, 0.7, 0.123, 0.999])
    out = combine(rows, gates, torch.arange(4), 4, 'stopgrad')
    assert torch.equal(out, rows)


def test_combine_injects_aux_gradient_once():
    rows = torch.randn(4, 3, requires_grad=True)
    aux = torch.tensor(2., requires_grad=True)
    out = combine(rows, torch.ones(4), torch.arange(4), 4, 'stopgrad', aux,
                  aux_grad=0.25)
    torch.testing.assert_close(out, rows)
    out.sum().backward()
    assert aux.grad.item() == 0.25
