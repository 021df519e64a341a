"""The expert computation paths, their gradient buffers and the key layout."""
import copy
from pathlib import Path

import pytest
import torch
from moe_reference import reference_rmoe_ffn, set_extension

from rmoe_mm.moe import RMoEFFN, experts, split_parameters
from rmoe_mm.moe.experts import (ExpertResiduals, ResidualLinear, choose_path,
                                 remap_legacy_residual_keys)

FIXTURE = Path(__file__).resolve().parents[1] / 'fixtures' / \
    'legacy_residual_keys.pth'


def freeze_core(moe):
    """Freeze the RMoE FFN's shared weights (the paper's core)."""
    for _, param in split_parameters(moe, backbone=None)['core']:
        param.requires_grad_(False)


def make_moe(embed_dims=6, hidden=10, num_experts=4, **cfg):
    torch.manual_seed(0)
    cfg = dict(
        dict(num_experts=num_experts, gate_noise=0., residual_std=0.1), **cfg)
    moe = RMoEFFN(
        embed_dims, hidden, act_cfg=dict(type='GELU'), **cfg).double().train()
    with torch.no_grad():
        for param in moe.residual.parameters():
            param.normal_(0, 0.1)
        moe.router.gate.weight.normal_(0, 1.)
    return moe


def trainable_grads(module, loss):
    names, params = zip(*[(n, p) for n, p in module.named_parameters()
                          if p.requires_grad])
    return dict(zip(names, torch.autograd.grad(loss, params)))


def test_path_choice():
    cpu = torch.device('cpu')
    few = [experts.CPU_BATCHED_MAX_ROWS] * 4
    many = [experts.CPU_BATCHED_MAX_ROWS + 1, 0, 3, 7]
    assert choose_path(few, cpu, torch.float32) == 'batched'
    assert choose_path(many, cpu, torch.float32) == 'blocked'
    assert choose_path(many, cpu, torch.float64) == 'blocked'
    assert choose_path(many, cpu, torch.bfloat16) == 'batched'
    assert choose_path(many, torch.device('cuda'), torch.float32) == \
        'batched'


def _spy_paths(monkeypatch):
    taken = []
    choose = experts.choose_path

    def spy(*args):
        taken.append(choose(*args))
        return taken[-1]

    monkeypatch.setattr(experts, 'choose_path', spy)
    return taken


@pytest.mark.parametrize('residual_rank', [None, 3])
@pytest.mark.parametrize('capacity_factor', [None, 0.8])
@pytest.mark.parametrize('top_k', [1, 2])
@pytest.mark.parametrize('tokens, path, cpp', [(6, 'batched', False),
                                               (120, 'blocked', False),
                                               (120, 'blocked', True)])
def test_default_paths_match_reference_with_frozen_core(
        tokens, path, cpp, top_k, capacity_factor, residual_rank, monkeypatch):
    """fp64, 1e-10: few rows per expert take the padded bmm, many rows the
    blocked GEMMs (Python or C++ loop; several blocks of 5 rows and a last
    one of 4 for H = 24); the gradient of every trainable parameter matches
    the reference with the core frozen."""
    set_extension(monkeypatch, cpp)
    monkeypatch.setattr(experts, 'CPU_BLOCK_BYTES', 5 * 16 * 8)
    taken = _spy_paths(monkeypatch)
    moe = make_moe(
        16,
        24,
        top_k=top_k,
        capacity_factor=capacity_factor,
        residual_rank=residual_rank,
        balance_loss_weight=0.)
    freeze_core(moe)
    x = torch.randn(tokens, 16, dtype=torch.float64)
    seed = torch.randn_like(x)
    out = moe(x)
    grads = trainable_grads(moe, (out * seed).sum())
    expected_out, _ = reference_rmoe_ffn(moe, x)
    expected = trainable_grads(moe, (expected_out * seed).sum())
    torch.testing.assert_close(out, expected_out, rtol=0, atol=1e-10)
    assert not any(name.startswith('layers.') for name in grads)
    for name in grads:
        torch.testing.assert_close(
            grads[name], expected[name], rtol=0, atol=1e-10, msg=name)
    if residual_rank is None:
        assert set(taken) == {path}
    else:
        assert taken == []  # the low-rank op has one path


@pytest.mark.parametrize('path, cpp', [('blocked', False), ('blocked', True),
                                       ('batched', False)])
def test_fp32_matches_reference_to_1e5(path, cpp, monkeypatch):
    """Swin-like proportions in fp32 (tolerance 1e-5), top-2, capacity."""
    set_extension(monkeypatch, cpp)
    monkeypatch.setattr(experts, 'CPU_BATCHED_MAX_ROWS',
                        -1 if path == 'blocked' else 10**9)
    monkeypatch.setattr(experts, 'CPU_BLOCK_BYTES', 16 * 32 * 4)
    taken = _spy_paths(monkeypatch)
    moe = make_moe(32, 128, top_k=2, capacity_factor=1.0).float()
    x = torch.randn(2, 40, 32, requires_grad=True)
    seed = torch.randn_like(x)
    grads = trainable_grads(moe, (moe(x) * seed).sum())
    expected_out, expected_aux = reference_rmoe_ffn(moe, x)
    expected = trainable_grads(moe, (expected_out * seed).sum() +
                               0.01 * expected_aux)
    torch.testing.assert_close(moe(x), expected_out, rtol=0, atol=1e-5)
    for name in grads:
        torch.testing.assert_close(
            grads[name], expected[name], rtol=0, atol=1e-5, msg=name)
    assert set(taken) == {path}


def _residual_grads(moe):
    return {n: p.grad.clone() for n, p in moe.residual.named_parameters()}


def _step(moe, x):
    moe(x).pow(2).sum().backward()


@pytest.mark.parametrize('cpp', [False, True])
def test_gradient_buffer_is_reused_and_never_leaks_between_steps(
        cpp, monkeypatch):
    set_extension(monkeypatch, cpp)
    moe = make_moe(16, 24, num_experts=2).float()
    x1, x2 = torch.randn(2, 50, 16), torch.randn(2, 50, 16)
    fresh = copy.deepcopy(moe)
    _step(fresh, x2)
    expected2 = _residual_grads(fresh)

    _step(moe, x1)
    first = moe.residual.fc1.weight.grad
    pointer = first.data_ptr()
    first_values = first.clone()
    moe.zero_grad(set_to_none=True)
    del first
    _step(moe, x2)
    # Nothing held the first gradient: its buffer now holds the second.
    assert moe.residual.fc1.weight.grad.data_ptr() == pointer
    for name, grad in _residual_grads(moe).items():
        torch.testing.assert_close(
            grad, expected2[name], rtol=0, atol=0, msg=name)

    # A gradient someone still holds is never overwritten.
    kept = moe.residual.fc1.weight.grad
    moe.zero_grad(set_to_none=True)
    _step(moe, x1)
    torch.testing.assert_close(kept, expected2['fc1.weight'], rtol=0, atol=0)
    torch.testing.assert_close(
        moe.residual.fc1.weight.grad, first_values, rtol=0, atol=0)


@pytest.mark.parametrize('cpp', [False, True])
def test_gradients_accumulate_without_zero_grad(cpp, monkeypatch):
    set_extension(monkeypatch, cpp)
    moe = make_moe(16, 24, num_experts=2).float()
    x1, x2 = torch.randn(2, 50, 16), torch.randn(2, 50, 16)
    parts = []
    for x in (x1, x2):
        single = copy.deepcopy(moe)
        _step(single, x)
        parts.append(_residual_grads(single))
    _step(moe, x1)
    _step(moe, x2)
    for name, grad in _residual_grads(moe).items():
        torch.testing.assert_close(
            grad,
            parts[0][name] + parts[1][name],
            rtol=1e-6,
            atol=1e-6,
            msg=name)


@pytest.mark.parametrize('cpp', [False, True])
def test_layers_do_not_share_gradient_buffers(cpp, monkeypatch):
    set_extension(monkeypatch, cpp)
    first = make_moe(16, 24, num_experts=2).float()
    second = copy.deepcopy(first)
    with torch.no_grad():
        for param in second.residual.parameters():
            param.mul_(-1)
    x = torch.randn(2, 50, 16)
    expected = []
    for layer in (first, second):
        single = copy.deepcopy(layer)
        _step(single, x)
        expected.append(_residual_grads(single))
    for _ in range(2):
        for layer in (first, second):
            layer.zero_grad(set_to_none=True)
        second(first(x)).sum()  # a graph through both layers, unused
        _step(first, x)
        _step(second, x)
        assert first.residual.fc1.weight.grad.data_ptr() != \
            second.residual.fc1.weight.grad.data_ptr()
        for layer, grads in zip((first, second), expected):
            for name, grad in _residual_grads(layer).items():
                torch.testing.assert_close(
                    grad, grads[name], rtol=0, atol=0, msg=name)


def test_autograd_grad_results_survive_the_next_backward():
    moe = make_moe(16, 24, num_experts=2).float()
    weight = moe.residual.fc2.weight
    x1, x2 = torch.randn(60, 16), torch.randn(60, 16)
    g1, = torch.autograd.grad(moe(x1).sum(), weight)
    before = g1.clone()
    g2, = torch.autograd.grad(moe(x2).sum(), weight)
    torch.testing.assert_close(g1, before, rtol=0, atol=0)
    assert g1.data_ptr() != g2.data_ptr()


def test_residual_parameter_names():
    full = ExpertResiduals(3, 4, 8)
    assert [n for n, _ in full.named_parameters()
            ] == ['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias']
    assert full.fc1.weight.shape == (3, 8, 4)
    assert full.fc2.weight.shape == (3, 4, 8)
    low = ExpertResiduals(3, 4, 8, rank=2)
    assert [n for n, _ in low.named_parameters()] == [
        'fc1.weight_a', 'fc1.weight_b', 'fc1.bias', 'fc2.weight_a',
        'fc2.weight_b', 'fc2.bias'
    ]
    torch.testing.assert_close(low.fc1.full_weight(),
                               low.fc1.weight_a @ low.fc1.weight_b)


def test_counts_must_split_the_rows():
    layer = ResidualLinear(3, 4, 5)
    core = torch.nn.Linear(4, 5)
    with pytest.raises(ValueError, match='do not split 6 rows among 3'):
        layer(torch.randn(6, 4), [2, 2, 1], core)
    with pytest.raises(ValueError, match='among 3 experts'):
        layer(torch.randn(6, 4), [3, 3], core)


def test_remap_legacy_residual_keys():
    old = {
        'backbone.stages.2.blocks.1.ffn.residual.fc1_weight': 1,
        'backbone.stages.2.blocks.1.ffn.residual.fc2_weight_a': 2,
        'residual.fc1_weight_b': 3,
        'residual.fc2_bias': 4,
        'backbone.stages.2.blocks.1.ffn.layers.0.0.weight': 5,
        'head.my_residual.fc1_weight': 6,  # not an RMoE residual
    }
    assert list(remap_legacy_residual_keys(old)) == [
        'backbone.stages.2.blocks.1.ffn.residual.fc1.weight',
        'backbone.stages.2.blocks.1.ffn.residual.fc2.weight_a',
        'residual.fc1.weight_b',
        'residual.fc2.bias',
        'backbone.stages.2.blocks.1.ffn.layers.0.0.weight',
        'head.my_residual.fc1_weight',
    ]


@pytest.fixture(scope='module')
def legacy_cases():
    return torch.load(FIXTURE, weights_only=True)


@pytest.mark.parametrize('name',
                         ['ffn_full', 'ffn_rank2', 'swin_full', 'swin_rank2'])
def test_checkpoint_of_the_string_keyed_layout_loads_with_identical_outputs(
        name, legacy_cases):
    """The fixture was saved by the code before the residuals were child
    modules (see tests/fixtures/make_legacy_residual_keys.py). Tolerance
    1e-5 (fp32): the expert matmuls now add their terms in another order."""
    from rmoe_mm.backbones.rmoe_swin import RMoESwinTransformer
    case = legacy_cases[name]
    assert any(k.endswith('residual.fc1_bias') for k in case['state_dict'])
    rank = None if case['residual_rank'] < 0 else case['residual_rank']
    fixture = _load_fixture_builder()
    if name.startswith('swin'):
        model = RMoESwinTransformer(
            **fixture.SWIN_ARGS,
            moe_cfg=dict(fixture.MOE_CFG, residual_rank=rank))
    else:
        model = RMoEFFN(**dict(fixture.FFN_ARGS, residual_rank=rank))
    model.load_state_dict(case['state_dict'], strict=True)
    model.eval()
    with torch.no_grad():
        outputs = model(case['input'])
    if not isinstance(outputs, (tuple, list)):
        outputs = [outputs]
    assert len(outputs) == len(case['outputs'])
    for out, expected in zip(outputs, case['outputs']):
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_legacy_checkpoint_file_loads_through_the_backbone_loader(
        legacy_cases, tmp_path):
    from rmoe_mm.backbones.rmoe_swin import RMoESwinTransformer
    fixture = _load_fixture_builder()
    case = legacy_cases['swin_full']
    path = tmp_path / 'old.pth'
    torch.save(
        dict(state_dict={
            f'backbone.{k}': v
            for k, v in case['state_dict'].items()
        }), path)
    model = RMoESwinTransformer(
        **fixture.SWIN_ARGS,
        moe_cfg=fixture.MOE_CFG,
        init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    model.eval()
    with torch.no_grad():
        outputs = model(case['input'])
    for out, expected in zip(outputs, case['outputs']):
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def _load_fixture_builder():
    import importlib.util
    path = FIXTURE.parent / 'make_legacy_residual_keys.py'
    spec = importlib.util.spec_from_file_location('legacy_fixture', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('residual_rank', [None, 4])
def test_cuda_frozen_core_matches_reference(residual_rank, monkeypatch):
    """fp32 on the GPU (TF32 off), tolerance 1e-4: the batched path with
    many rows per expert, top-2, capacity, core frozen."""
    monkeypatch.setattr(torch.backends.cuda.matmul, 'allow_tf32', False)
    taken = _spy_paths(monkeypatch)
    moe = make_moe(
        32, 64, top_k=2, capacity_factor=1.0,
        residual_rank=residual_rank).float().cuda()
    freeze_core(moe)
    x = torch.randn(2, 60, 32, device='cuda')
    seed = torch.randn_like(x)
    grads = trainable_grads(moe, (moe(x) * seed).sum())
    expected_out, expected_aux = reference_rmoe_ffn(moe, x)
    expected = trainable_grads(moe, (expected_out * seed).sum() +
                               0.01 * expected_aux)
    torch.testing.assert_close(moe(x), expected_out, rtol=0, atol=1e-4)
    for name in grads:
        torch.testing.assert_close(
            grads[name], expected[name], rtol=0, atol=1e-4, msg=name)
    assert set(taken) <= {'batched'}
