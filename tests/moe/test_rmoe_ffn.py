"""RMoEFFN against mmcv's FFN and against a naive per-token reference."""
import pytest
import torch
from mmcv.cnn.bricks.transformer import FFN
from moe_reference import reference_rmoe_ffn, set_extension

from rmoe_mm.moe import RMoEFFN, experts, split_parameters

C, H, E = 6, 10, 4


@pytest.fixture(params=['blocked', 'blocked_cpp', 'batched'])
def expert_path(request, monkeypatch):
    """Run the test with every full-residual path, and check it was taken.

    ``blocked`` (the Python loop) and ``blocked_cpp`` (the C++ extension,
    skipped if it is not built) get 2-row blocks, so that every linear layer
    is split into several blocks (and a last, smaller one: H = 10 is not a
    multiple of 4).
    """
    set_extension(monkeypatch, request.param == 'blocked_cpp')
    if request.param.startswith('blocked'):
        monkeypatch.setattr(experts, 'CPU_BATCHED_MAX_ROWS', -1)
        monkeypatch.setattr(experts, 'CPU_BLOCK_BYTES', 2 * H * 8)
    else:
        monkeypatch.setattr(experts, 'CPU_BATCHED_MAX_ROWS', 10**9)
    taken = []
    choose = experts.choose_path

    def spy(*args):
        taken.append(choose(*args))
        return taken[-1]

    monkeypatch.setattr(experts, 'choose_path', spy)
    yield request.param
    assert set(taken) <= {request.param.replace('_cpp', '')}


def make_moe(**cfg):
    torch.manual_seed(0)
    cfg = dict(dict(num_experts=E, gate_noise=0., residual_std=0.1), **cfg)
    moe = RMoEFFN(C, H, act_cfg=dict(type='GELU'), **cfg).double().train()
    with torch.no_grad():  # non-zero biases and router so every path counts
        for param in moe.residual.parameters():
            param.normal_(0, 0.1)
        moe.router.gate.weight.normal_(0, 1.)
    return moe


def named_grads(module, loss):
    names, params = zip(*[(n, p) for n, p in module.named_parameters()
                          if p.requires_grad])
    return dict(
        zip(names, torch.autograd.grad(loss, params, allow_unused=True)))


def test_zero_residual_top1_stopgrad_equals_dense_ffn():
    """1e-6 in fp32: top-1, zero residual, stopgrad is the dense FFN."""
    torch.manual_seed(0)
    dense = FFN(32, 64, act_cfg=dict(type='GELU'))
    moe = RMoEFFN.from_dense(dense, num_experts=4, residual_std=0.)
    x = torch.randn(2, 50, 32)
    identity = torch.randn(2, 50, 32)
    for mode in (True, False):  # training (gate noise on) and eval
        dense.train(mode), moe.train(mode)
        torch.testing.assert_close(moe(x), dense(x), rtol=0, atol=1e-6)
        torch.testing.assert_close(
            moe(x, identity), dense(x, identity), rtol=0, atol=1e-6)


def test_dense_checkpoint_loads_into_core_without_renaming():
    dense = FFN(C, H)
    moe = RMoEFFN(C, H, num_experts=E)
    result = moe.load_state_dict(dense.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert all(
        key.startswith(('residual.', 'router.'))
        for key in result.missing_keys)
    torch.testing.assert_close(moe.layers[1].weight, dense.layers[1].weight)


@pytest.mark.parametrize('capacity_factor', [None, 0.5])
@pytest.mark.parametrize('alignment', ['stopgrad', 'weighted'])
@pytest.mark.parametrize('top_k', [1, 2])
def test_forward_and_backward_match_per_token_reference(
        top_k, alignment, capacity_factor, expert_path):
    """fp64, tolerance 1e-10: output and the gradient of every parameter."""
    moe = make_moe(
        top_k=top_k,
        alignment=alignment,
        capacity_factor=capacity_factor,
        balance_loss_weight=0.3)
    x = torch.randn(3, 7, C, dtype=torch.float64, requires_grad=True)
    seed = torch.randn_like(x)

    out = moe(x)
    grads = named_grads(moe, (out * seed).sum())
    expected_out, expected_aux = reference_rmoe_ffn(moe, x)
    expected = named_grads(moe,
                           (expected_out * seed).sum() + 0.3 * expected_aux)

    if capacity_factor:
        assert moe.moe_stats()['dropped'] > 0
    torch.testing.assert_close(out, expected_out, rtol=0, atol=1e-10)
    assert grads.keys() == expected.keys()
    for name in grads:
        torch.testing.assert_close(
            grads[name], expected[name], rtol=0, atol=1e-10, msg=name)
        assert grads[name].abs().sum() > 0, name


def test_input_gradient_matches_reference(expert_path):
    moe = make_moe(top_k=2, capacity_factor=0.7)
    x = torch.randn(2, 9, C, dtype=torch.float64, requires_grad=True)
    seed = torch.randn_like(x)
    grad, = torch.autograd.grad((moe(x) * seed).sum(), x)
    expected_out, expected_aux = reference_rmoe_ffn(moe, x)
    expected, = torch.autograd.grad(
        (expected_out * seed).sum() + 0.01 * expected_aux, x)
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-10)


def test_low_rank_residual_matches_reference():
    moe = make_moe(residual_rank=2, top_k=2)
    assert {n
            for n, _ in moe.residual.named_parameters()} == {
                'fc1.weight_a', 'fc1.weight_b', 'fc1.bias', 'fc2.weight_a',
                'fc2.weight_b', 'fc2.bias'
            }
    x = torch.randn(11, C, dtype=torch.float64)
    seed = torch.randn_like(x)
    grads = named_grads(moe, (moe(x) * seed).sum())
    expected_out, expected_aux = reference_rmoe_ffn(moe, x)
    expected = named_grads(moe,
                           (expected_out * seed).sum() + 0.01 * expected_aux)
    torch.testing.assert_close(moe(x), expected_out, rtol=0, atol=1e-10)
    for name in grads:
        torch.testing.assert_close(
            grads[name], expected[name], rtol=0, atol=1e-10, msg=name)


def test_stopgrad_forward_is_the_unweighted_sum_of_selected_experts():
    moe = make_moe(top_k=2)
    weighted = make_moe(top_k=2, alignment='weighted')
    x = torch.randn(8, C, dtype=torch.float64)
    # With gates summing to 1 (top-2 renormalised), the weighted output lies
    # between the experts; the stopgrad one is their plain sum: not the same.
    assert not torch.allclose(moe(x), weighted(x))
    moe_zero = make_moe(top_k=2)
    with torch.no_grad():
        for param in moe_zero.residual.parameters():
            param.zero_()
    core = moe_zero.layers
    dense = core[1](core[0](x))
    torch.testing.assert_close(moe_zero(x), x + 2 * dense, rtol=0, atol=1e-12)


def test_frozen_core_gets_no_gradient_but_residuals_and_router_do(expert_path):
    moe = make_moe()
    groups = split_parameters(moe, backbone=None)
    for _, param in groups['core']:
        param.requires_grad_(False)
    x = torch.randn(20, C, dtype=torch.float64)
    moe(x).pow(2).sum().backward()
    assert groups['heads'] == []
    assert [n for n, _ in groups['core']] == [
        'layers.0.0.weight', 'layers.0.0.bias', 'layers.1.weight',
        'layers.1.bias'
    ]
    assert all(p.grad is None for _, p in groups['core'])
    for name, param in groups['residual'] + groups['router']:
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_experts_without_tokens_get_zero_gradient(expert_path):
    moe = make_moe()
    x = torch.randn(1, C, dtype=torch.float64).expand(12, C).contiguous()
    out = moe(x)
    counts = moe.moe_stats()['tokens_per_expert']
    assert sorted(counts) == [0, 0, 0, 12]
    out.sum().backward()
    torch.testing.assert_close(
        out, reference_rmoe_ffn(moe, x)[0], rtol=0, atol=1e-10)
    busy = counts.index(12)
    for expert in range(E):
        grad = moe.residual.fc1.weight.grad[expert]
        assert (grad.abs().sum() > 0) == (expert == busy)


@pytest.mark.parametrize('shape', [(0, C), (1, C), (5, C), (2, 3, 7, C)])
def test_any_token_count(shape, expert_path):
    moe = make_moe(top_k=2, capacity_factor=1.0)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    out = moe(x)
    assert out.shape == x.shape
    out.sum().backward()
    assert x.grad.shape == x.shape
    assert moe.moe_stats()['num_tokens'] == x.numel() // C


def test_overflow_tokens_pass_through_identity_and_are_counted():
    """capacity_factor 0.1 with 40 tokens, 4 experts: 1 slot per expert."""
    moe = make_moe(capacity_factor=0.1)
    x = torch.randn(40, C, dtype=torch.float64)
    out = moe(x)
    stats = moe.moe_stats()
    served = (out - x).abs().sum(-1) > 0
    assert served.sum() == sum(min(c, 1) for c in stats['tokens_per_expert'])
    assert stats['dropped'] == 40 - served.sum()
    torch.testing.assert_close(out[~served], x[~served], rtol=0, atol=0)


@pytest.mark.parametrize('residual_rank', [None, 2])
def test_bf16_autocast_on_cpu_runs_and_stays_close_to_fp32(residual_rank):
    torch.manual_seed(0)
    moe = RMoEFFN(
        16,
        32,
        num_experts=4,
        top_k=2,
        gate_noise=0.,
        residual_rank=residual_rank,
        residual_std=0.02)
    x = torch.randn(2, 24, 16, requires_grad=True)
    expected = moe(x)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = moe(x)
    out.sum().backward()
    # Routing runs in fp32, so the experts agree and only bf16 matmul
    # rounding (relative 2^-8 per op) separates the two.
    torch.testing.assert_close(out, expected, rtol=0.05, atol=0.05)
    for name, param in moe.named_parameters():
        assert param.grad.dtype == torch.float32, name
        assert torch.isfinite(param.grad).all(), name


@pytest.mark.parametrize('residual_rank', [None, 2])
def test_output_dtype_under_autocast_matches_dense_ffn(residual_rank):
    dense = FFN(16, 32, add_identity=False)
    moe = RMoEFFN.from_dense(dense, num_experts=4, residual_rank=residual_rank)
    x = torch.randn(5, 16)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert moe(x).dtype == dense(x).dtype == torch.bfloat16


def test_gate_noise_only_in_training():
    moe = RMoEFFN(C, H, num_experts=E, gate_noise=5.)
    x = torch.randn(64, C)
    moe.eval()
    torch.testing.assert_close(moe(x), moe(x), rtol=0, atol=0)
    moe.train()
    moe(x)
    first = moe.moe_stats()['tokens_per_expert']
    moe(x)
    assert moe.moe_stats()['tokens_per_expert'] != first


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('residual_rank', [None, 2])
@pytest.mark.parametrize('top_k, capacity_factor', [(1, None), (2, 0.5)])
def test_cuda_matches_per_token_reference(top_k, capacity_factor,
                                          residual_rank, monkeypatch):
    """fp32 on the GPU (TF32 off), tolerance 1e-4; then a bf16 autocast run."""
    monkeypatch.setattr(torch.backends.cuda.matmul, 'allow_tf32', False)
    moe = make_moe(
        top_k=top_k,
        capacity_factor=capacity_factor,
        residual_rank=residual_rank).float().cuda()
    x = torch.randn(3, 7, C, device='cuda')
    seed = torch.randn_like(x)
    grads = named_grads(moe, (moe(x) * seed).sum())
    expected_out, expected_aux = reference_rmoe_ffn(moe, x)
    expected = named_grads(moe,
                           (expected_out * seed).sum() + 0.01 * expected_aux)
    torch.testing.assert_close(moe(x), expected_out, rtol=0, atol=1e-4)
    for name in grads:
        torch.testing.assert_close(
            grads[name], expected[name], rtol=0, atol=1e-4, msg=name)
    with torch.autocast('cuda', dtype=torch.bfloat16):
        out = moe(x)
    out.float().sum().backward()
