"""Naive per-token RMoE FFN, written from the method's formulas for the tests.

Nothing here is shared with ``rmoe_mm.moe``: routing, capacity, the expert
weights and the alignment are recomputed token by token with plain loops, on
the parameters of the module under test, so that autograd on this reference
gives the expected gradient of every parameter.
"""
import math

import torch


def reference_routing(moe, tokens):
    """(probs [N, E], gates [N, k], experts [N, k]): noise-free router."""
    logits = tokens @ moe.router.gate.weight.t()
    probs = torch.softmax(logits, dim=-1)
    gates, experts = torch.topk(probs, moe.top_k, dim=-1)
    if moe.top_k > 1:
        gates = gates / gates.sum(-1, keepdim=True)
    return probs, gates, experts


def reference_kept(experts, num_experts, capacity_factor):
    """Set of kept (token, choice): first choices first, then token order."""
    num_tokens, top_k = experts.shape
    capacity = None
    if capacity_factor:
        capacity = math.ceil(capacity_factor * top_k * num_tokens /
                             num_experts)
    used = [0] * num_experts
    kept = set()
    for choice in range(top_k):
        for token in range(num_tokens):
            expert = int(experts[token, choice])
            if capacity is None or used[expert] < capacity:
                used[expert] += 1
                kept.add((token, choice))
    return kept


def residual_weight(moe, fc, expert):
    res = getattr(moe.residual, fc)
    if res.rank is None:
        return res.weight[expert]
    return res.weight_a[expert] @ res.weight_b[expert]


def expert_output(moe, token, expert):
    """Expert ``expert`` = the dense FFN with core + residual weights."""
    fc1, act = moe.layers[0][0], moe.layers[0][1]
    fc2 = moe.layers[1]
    w1 = fc1.weight + residual_weight(moe, 'fc1', expert)
    b1 = fc1.bias + moe.residual.fc1.bias[expert]
    w2 = fc2.weight + residual_weight(moe, 'fc2', expert)
    b2 = fc2.bias + moe.residual.fc2.bias[expert]
    hidden = act(w1 @ token + b1)
    return w2 @ hidden + b2


def importance_cv2(probs):
    importance = probs.sum(0)
    mean = importance.mean()
    var = ((importance - mean)**2).sum() / (importance.numel() - 1)
    return var / mean**2


def reference_rmoe_ffn(moe, x):
    """(output, importance loss) of ``moe`` on ``x [..., C]``, per token."""
    tokens = x.reshape(-1, moe.embed_dims)
    probs, gates, experts = reference_routing(moe, tokens)
    kept = reference_kept(experts, moe.num_experts, moe.capacity_factor)
    rows = []
    for token in range(tokens.shape[0]):
        y = torch.zeros_like(tokens[token])
        for choice in range(moe.top_k):
            if (token, choice) not in kept:
                continue
            out = expert_output(moe, tokens[token], int(experts[token,
                                                                choice]))
            gate = gates[token, choice]
            if moe.alignment == 'stopgrad':
                y = y + ((1 - gate) * out).detach() + gate * out
            else:
                y = y + gate * out
        rows.append(y)
    out = torch.stack(rows).reshape(x.shape)
    return x + out, importance_cv2(probs)


def set_extension(monkeypatch, use):
    """Use the C++ blocked loop (skip the test if tools/setup_env.sh has not
    built it: no compiler here) or the Python one, for the rest of the test."""
    import pytest

    from rmoe_mm.moe import ext
    if not use:
        monkeypatch.setattr(ext, 'get', lambda: None)
        return
    if not ext.is_built():
        pytest.skip('the C++ expert loop is not built (tools/setup_env.sh)')
    compiled = ext.build()  # loads the built one
    monkeypatch.setattr(ext, 'get', lambda: compiled)
