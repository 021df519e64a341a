"""Expert-parallel RMoE FFN layers on several ranks, and their reference.

The reference is the same RMoE FFN in one process holding every expert: it
runs each rank's tokens as a separate forward (what each rank does), sums the
ranks' losses and divides every gradient by the world size (what DDP's
average does). Expert-parallel ranks exchange their tokens; their replicated
gradients are averaged by hand, as DDP would. Tolerance 1e-6 (fp32; the two
differ only in summation order and in how many rows a matmul sees).
Checkpoints: a 1-process state dict loads into the ranks (same outputs), and
their ``state_dict()`` gives it back bit for bit.

Use: :func:`prepare_layer_cases` in the test, :func:`run_layer_cases` in
each spawned rank, :func:`check_layer_cases` in the test again.
"""
import contextlib

import torch
import torch.distributed as dist

from rmoe_mm.checkpoint import load_checkpoint_file
from rmoe_mm.moe import RMoEFFN, ext
from rmoe_mm.moe.experts import CPU_BATCHED_MAX_ROWS
from rmoe_mm.moe.parallel import full_state_shapes, ignore_expert_shards_in_ddp

C, H = 8, 16

#: Two ranks: unequal token counts, an expert no token picks, top-1 / 2;
#: few rows per expert take the ``'batched'`` path of :mod:`..moe.experts`,
#: many the ``'blocked'`` one (C++ loop if built, ``ext=False``: Python
#: loop), and a low-rank residual (``rank``) its own.
CASES_2 = [
    dict(name='top1', experts=4, top_k=1, tokens=[7, 3], empty=3),
    dict(name='top2', experts=4, top_k=2, tokens=[5, 9], empty=0),
    dict(name='idle_rank', experts=4, top_k=2, tokens=[6, 0], empty=None),
    dict(name='blocked', experts=4, top_k=2, tokens=[40, 26], empty=None),
    dict(
        name='blocked_python',
        experts=4,
        top_k=2,
        tokens=[33, 24],
        empty=None,
        ext=False),
    dict(
        name='low_rank', experts=4, top_k=1, tokens=[30, 11], empty=1, rank=2),
]
#: Three ranks: 2 experts each, a rank without tokens; experts replicated
#: on every rank (group size 1: the replica all-reduce path).
CASES_3 = [
    dict(name='top2', experts=6, top_k=2, tokens=[4, 0, 9], empty=5),
    dict(
        name='replicated',
        experts=4,
        top_k=1,
        tokens=[3, 5, 2],
        empty=None,
        group_size=1),
]


def make_layer(case):
    """The case's layer; under a process group it is expert-parallel."""
    torch.manual_seed(len(case['name']))
    layer = RMoEFFN(
        C,
        H,
        act_cfg=dict(type='GELU'),
        moe_cfg=dict(
            num_experts=case['experts'],
            top_k=case['top_k'],
            gate_noise=0.,
            residual_std=0.1,
            balance_loss_weight=0.1,
            residual_rank=case.get('rank'),
            expert_parallel=True,
            expert_parallel_size=case.get('group_size')))
    with torch.no_grad():
        layer.router.gate.weight.normal_(0, 1.)
        if case['empty'] is not None:  # tokens are positive: never picked
            layer.router.gate.weight[case['empty']] = -1.
    return layer


def tokens_and_weights(case, rank):
    gen = torch.Generator().manual_seed(100 * len(case['name']) + rank)
    num = case['tokens'][rank]
    return (torch.rand(num, C, generator=gen) + 0.1,
            torch.randn(num, C, generator=gen))


def run_layer_cases(rank, world, cases, out_dir):
    """A worker's part: every case's layer on this rank's tokens, results
    to ``out_dir/rank{rank}.pt``."""
    results = {}
    for case in cases:
        with extension(case):
            results[case['name']] = _run_layer_case(case, rank, world, out_dir)
    torch.save(results, out_dir / f'rank{rank}.pt')


@contextlib.contextmanager
def extension(case):
    """The C++ expert loop as the case says (default: ``RMOE_MM_EXT``)."""
    if 'ext' in case:
        ext.set_enabled(case['ext'])
    try:
        yield
    finally:
        ext.set_enabled(None)


def _run_layer_case(case, rank, world, out_dir):
    layer = make_layer(case)
    assert layer.expert_parallel is not None
    ignore_expert_shards_in_ddp(layer)  # as the DDP wrapper does
    x, weights = tokens_and_weights(case, rank)
    x.requires_grad_()
    out = layer(x)
    (out * weights).sum().backward()
    grads = {}
    for name, param in layer.named_parameters():
        if not name.startswith('residual.'):  # DDP's average
            dist.all_reduce(param.grad)
            param.grad /= world
        grads[name] = param.grad.clone()
    layer.load_state_dict(
        load_checkpoint_file(out_dir / f'{case["name"]}_1.pt'))
    with torch.no_grad():
        loaded_out = layer(x)
    state = layer.state_dict()  # collective: full-size tensors
    assert full_state_shapes(layer) == {k: v.shape for k, v in state.items()}
    return dict(
        out=out.detach(),
        x_grad=x.grad,
        grads=grads,
        counts=torch.bincount(
            layer.last_routing.expert_index.flatten(),
            minlength=case['experts']),
        loaded_out=loaded_out,
        state=state)


def prepare_layer_cases(cases, out_dir):
    """The 1-process checkpoints the ranks load (before spawning them)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for case in cases:
        layer = make_layer(case)
        assert layer.expert_parallel is None  # no process group here
        torch.manual_seed(1)
        with torch.no_grad():  # a trained-looking checkpoint to load
            for param in layer.parameters():
                param.add_(torch.randn_like(param) * 0.05)
        torch.save(layer.state_dict(), out_dir / f'{case["name"]}_1.pt')


def check_layer_cases(cases, world, out_dir):
    """Compare the ranks' results with one process (see the module doc)."""
    ranks = [
        load_checkpoint_file(out_dir / f'rank{r}.pt') for r in range(world)
    ]
    for case in cases:
        with extension(case):
            _check_layer_case(case, [rank[case['name']] for rank in ranks],
                              world, out_dir)


def _check_layer_case(case, got, world, out_dir):
    name = case['name']
    reference = make_layer(case)
    inputs = [tokens_and_weights(case, r) for r in range(world)]
    outs, xs = [], []
    for x, weights in inputs:
        x.requires_grad_()
        out = reference(x)
        (out * weights).sum().backward()
        outs.append(out.detach())
        xs.append(x)
    if case['name'].startswith('blocked'):  # many rows per expert
        assert all(g['counts'].max() > CPU_BATCHED_MAX_ROWS for g in got)
    counts = sum(g['counts'] for g in got)
    assert sum(case['tokens']) * case['top_k'] == counts.sum()
    if case['empty'] is not None:
        assert counts[case['empty']] == 0
    group = case.get('group_size') or world
    local = case['experts'] // group
    for rank in range(world):
        close = dict(rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got[rank]['out'], outs[rank], **close)
        torch.testing.assert_close(got[rank]['x_grad'], xs[rank].grad, **close)
        first = rank % group * local
        for pname, param in reference.named_parameters():
            want = param.grad / world
            if pname.startswith('residual.'):
                want = want[first:first + local]
            torch.testing.assert_close(
                got[rank]['grads'][pname], want, **close, msg=pname)
        # 1 -> N: the same outputs (an expert's matmul over other
        # ranks' rows too may round differently: 1e-6); N -> 1: the
        # full checkpoint back, bit for bit.
        loaded = make_layer(case)
        loaded.load_state_dict(load_checkpoint_file(out_dir / f'{name}_1.pt'))
        with torch.no_grad():
            torch.testing.assert_close(got[rank]['loaded_out'],
                                       loaded(inputs[rank][0]), **close)
        state = loaded.state_dict()
        assert got[rank]['state'].keys() == state.keys()
        for key, value in state.items():
            assert torch.equal(got[rank]['state'][key], value), key
