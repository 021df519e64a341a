"""The balance loss trains the router from inside the layer's backward."""
import types

import pytest
import torch
from moe_reference import importance_cv2
from torch.utils.checkpoint import checkpoint

from rmoe_mm.hooks import aux_grad_scale_from_optim_wrapper
from rmoe_mm.moe import (RMoEFFN, collect_moe_stats, inject_aux_grad,
                         moe_balance_loss, set_aux_grad_scale,
                         set_balance_loss_mode)

C, H, E = 6, 10, 4


def make_moe(**cfg):
    torch.manual_seed(0)
    cfg = dict(dict(num_experts=E, gate_noise=0.), **cfg)
    moe = RMoEFFN(C, H, **cfg).double().train()
    with torch.no_grad():
        moe.router.gate.weight.normal_(0, 1.)
    return moe


def router_grad_of(loss_fn, moe):
    moe.zero_grad()
    loss_fn().backward()
    return moe.router.gate.weight.grad.clone()


def expected_aux_router_grad(moe, x, weight, kind='importance'):
    """d(weight * balance loss)/d(router weight), from the formulas."""
    probs = torch.softmax(x @ moe.router.gate.weight.t(), -1)
    if kind == 'importance':
        loss = importance_cv2(probs)
    else:
        first = torch.bincount(probs.argmax(-1), minlength=E).double()
        loss = E * (first / x.shape[0] * probs.mean(0)).sum()
    grad, = torch.autograd.grad(weight * loss, moe.router.gate.weight)
    return grad


@pytest.mark.parametrize('kind', ['importance', 'load'])
def test_router_gets_balance_loss_gradient_with_no_caller_change(kind):
    """The caller's loss ignores the FFN output (gradient 0), yet the router
    receives exactly weight * d(balance loss)/d(router); tolerance 1e-12."""
    moe = make_moe(balance_loss=kind, balance_loss_weight=0.5)
    x = torch.randn(30, C, dtype=torch.float64)
    grad = router_grad_of(lambda: (moe(x) * 0).sum(), moe)
    torch.testing.assert_close(
        grad, expected_aux_router_grad(moe, x, 0.5, kind), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    'cfg', [dict(balance_loss_weight=0.),
            dict(balance_loss='none')])
def test_disabled_balance_loss_adds_no_gradient(cfg):
    moe = make_moe(**cfg)
    x = torch.randn(30, C, dtype=torch.float64)
    grad = router_grad_of(lambda: (moe(x) * 0).sum(), moe)
    assert grad.abs().sum() == 0


def test_aux_grad_scale_multiplies_injected_gradient():
    """An AMP loss scale of 1024 scales the balance-loss gradient alike."""
    moe = make_moe()
    x = torch.randn(30, C, dtype=torch.float64)
    plain = router_grad_of(lambda: (moe(x) * 0).sum(), moe)
    assert set_aux_grad_scale(moe, 1024.) == 1
    scaled = router_grad_of(lambda: (moe(x) * 0).sum(), moe)
    torch.testing.assert_close(scaled, 1024 * plain, rtol=1e-12, atol=0)


def test_two_models_in_one_process_keep_their_own_aux_grad_scale():
    """Each model's router gets its own scale, whatever the other model
    was set to last (a process-wide scale would give both the last one);
    tolerance 1e-12."""
    first, second = make_moe(), make_moe()
    x = torch.randn(30, C, dtype=torch.float64)
    plain = router_grad_of(lambda: (first(x) * 0).sum(), first)
    set_aux_grad_scale(first, 2.)
    set_aux_grad_scale(second, 0.5)
    loss_first = (first(x) * 0).sum()
    loss_second = (second(x) * 0).sum()
    first.zero_grad()
    second.zero_grad()
    (loss_first + loss_second).backward()
    torch.testing.assert_close(
        first.router.gate.weight.grad, 2. * plain, rtol=1e-12, atol=0)
    torch.testing.assert_close(
        second.router.gate.weight.grad, 0.5 * plain, rtol=1e-12, atol=0)


def test_aux_grad_scale_follows_optim_wrapper_scale_and_accumulation():
    """Equal to the factor OptimWrapper.scale_loss puts on the main loss."""
    from mmengine.optim import OptimWrapper
    param = torch.nn.Parameter(torch.zeros(1))
    wrapper = OptimWrapper(
        torch.optim.SGD([param], lr=1.), accumulative_counts=4)
    wrapper.initialize_count_status(torch.nn.Linear(1, 1), 0, 10)
    for _ in range(10):  # windows of 4, 4, then the remainder 2
        loss = torch.ones(())
        assert aux_grad_scale_from_optim_wrapper(wrapper) == (
            wrapper.scale_loss(loss).item())
        wrapper._inner_count += 1
    amp_like = types.SimpleNamespace(
        loss_scaler=types.SimpleNamespace(
            get_scale=lambda: 65536., is_enabled=lambda: True),
        _accumulative_counts=1)
    assert aux_grad_scale_from_optim_wrapper(amp_like) == 65536.


@pytest.mark.parametrize('use_reentrant', [True, False])
def test_gradient_checkpointing_injects_aux_gradient_once(use_reentrant):
    """with_cp runs the forward twice; gradients equal the plain run."""
    moe = make_moe(top_k=2, capacity_factor=1.0, balance_loss_weight=0.3)
    x = torch.randn(2, 15, C, dtype=torch.float64, requires_grad=True)
    seed = torch.randn_like(x)

    def grads(run):
        moe.zero_grad()
        x.grad = None
        (run(x) * seed).sum().backward()
        return [x.grad.clone()] + [p.grad.clone() for p in moe.parameters()]

    expected = grads(moe)
    stats = moe.moe_stats()
    got = grads(lambda t: checkpoint(moe, t, use_reentrant=use_reentrant))
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert moe.moe_stats() == stats  # a snapshot, not counted twice


def test_collect_moe_stats_reports_each_layer_of_the_last_forward():
    model = torch.nn.Sequential(make_moe(), torch.nn.Identity(), make_moe())
    assert collect_moe_stats(model) == {}
    x = torch.randn(20, C, dtype=torch.float64)
    model(x)
    stats = collect_moe_stats(model)
    assert list(stats) == ['0', '2']
    for layer in stats.values():
        assert sum(layer['tokens_per_expert']) == 20
        assert layer['num_tokens'] == 20 and layer['dropped'] == 0
        assert 0 <= layer['router_entropy'] <= torch.log(torch.tensor(4.))
        assert layer['balance_loss'] >= 0
    model.eval()
    model(x)
    assert 'balance_loss' not in collect_moe_stats(model)['0']


def test_inject_aux_grad_is_the_identity_and_gives_the_loss_its_gradient():
    x = torch.randn(4, 3, requires_grad=True)
    aux = torch.tensor(2., requires_grad=True)
    out = inject_aux_grad(x, aux, 0.25)
    assert torch.equal(out, x)
    seed = torch.randn(4, 3)
    (out * seed).sum().backward()
    assert aux.grad.item() == 0.25
    assert torch.equal(x.grad, seed)


def test_loss_mode_gives_the_injected_gradients_also_under_checkpointing():
    """'loss' mode: the layer keeps its loss, the caller adds weight * loss;
    every gradient equals the injected mode's (tolerance 1e-12), with and
    without non-reentrant checkpointing."""
    moe = make_moe(top_k=2, balance_loss_weight=0.3)
    x = torch.randn(2, 15, C, dtype=torch.float64)
    seed = torch.randn_like(x)

    def grads(run, loss_mode):
        moe.zero_grad()
        set_balance_loss_mode(moe, 'loss' if loss_mode else 'gradient')
        loss = (run(x) * seed).sum()
        if loss_mode:
            loss = loss + moe_balance_loss(moe)
            assert moe_balance_loss(moe) is None  # taken once
        loss.backward()
        return [p.grad.clone() for p in moe.parameters()]

    expected = grads(moe, loss_mode=False)
    for run in (moe, lambda t: checkpoint(moe, t, use_reentrant=False)):
        for a, b in zip(grads(run, loss_mode=True), expected):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert moe.last_balance_loss is not None and \
        not moe.last_balance_loss.requires_grad


def test_loss_mode_refuses_a_forward_without_autograd():
    """Reentrant checkpointing runs the forward without autograd, so a kept
    loss could not train the router: a clear error, not a silent 0."""
    moe = make_moe()
    set_balance_loss_mode(moe, 'loss')
    x = torch.randn(2, 15, C, dtype=torch.float64, requires_grad=True)
    checkpoint(moe, x, use_reentrant=True)
    with pytest.raises(RuntimeError, match='without autograd'):
        moe_balance_loss(moe)


def test_unknown_balance_loss_mode_is_an_error():
    with pytest.raises(ValueError, match="one of \\('gradient', 'loss'\\)"):
        set_balance_loss_mode(make_moe(), 'both')
