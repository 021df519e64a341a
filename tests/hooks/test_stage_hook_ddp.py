"""RMoEStageHook under DDP: 2 CPU processes, gloo.

1. ``rewrap_ddp`` (what the hook does at a stage switch): after freezing a
   layer and re-wrapping, DDP averages the gradients of exactly the trainable
   parameters, the frozen ones get none, and the old wrapper's hooks are gone
   (a stale reducer would also hook into backward). Reference: the mean of
   the per-rank gradients of an unwrapped copy, to 1e-6.
2. ``tools/dist_train.sh`` on a 2-process toy RMoE-I run that crosses the
   switch: every parameter is identical on both ranks at the end.
"""
import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from rmoe_mm.testing import run_tool

pytestmark = pytest.mark.slow  # 2 processes each

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _inputs(rank, step):
    return torch.randn(
        5, 4, generator=torch.Generator().manual_seed(100 * step + rank))


def _rewrap_worker(rank, port, result_dir):
    import copy
    from types import SimpleNamespace

    from mmengine.config import Config
    from mmengine.model import MMDistributedDataParallel

    from rmoe_mm.hooks import rewrap_ddp
    os.environ['LOCAL_RANK'] = str(rank)
    dist.init_process_group(
        'gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=2)
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    reference = copy.deepcopy(module)
    runner = SimpleNamespace(
        model=MMDistributedDataParallel(module, broadcast_buffers=False),
        cfg=Config())
    # One step with everything trainable, as DDP was built.
    runner.model(_inputs(rank, 0)).sum().backward()
    module.zero_grad(set_to_none=True)
    # Freeze the first layer ('the core'), re-wrap, train two steps.
    for p in module[0].parameters():
        p.requires_grad_(False)
    old_wrapper = runner.model  # kept alive, as a stray reference would be
    rewrap_ddp(runner)
    assert runner.model is not old_wrapper
    for step in (1, 2):
        module.zero_grad(set_to_none=True)
        runner.model(_inputs(rank, step)).sum().backward()
    grads = {
        n: (None if p.grad is None else p.grad.clone())
        for n, p in module.named_parameters()
    }
    torch.save(grads, os.path.join(result_dir, f'grads{rank}.pt'))
    dist.destroy_process_group()
    del reference, old_wrapper


def test_rewrap_ddp_reduces_exactly_the_trainable_parameters(tmp_path):
    mp.spawn(
        _rewrap_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    local = []
    for rank in (0, 1):
        reference.zero_grad(set_to_none=True)
        reference(_inputs(rank, 2)).sum().backward()
        local.append({
            n: p.grad.clone()
            for n, p in reference.named_parameters()
        })
    for rank in (0, 1):
        grads = torch.load(tmp_path / f'grads{rank}.pt')
        assert grads['0.weight'] is None and grads['0.bias'] is None
        for name in ('2.weight', '2.bias'):
            expected = (local[0][name] + local[1][name]) / 2
            torch.testing.assert_close(
                grads[name], expected, rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(sys.platform == 'win32', reason='bash script')
def test_dist_train_crosses_the_switch_with_identical_ranks(tmp_path):
    config = HERE / 'toy_rmoe_dist_config.py'
    run_tool(
        'tools/dist_train.sh',
        config,
        2,
        '--work-dir',
        tmp_path,
        env={
            'PORT': str(free_port()),
            'OMP_NUM_THREADS': '1'
        })
    log = next(tmp_path.glob('2*/2*.log')).read_text()
    assert "RMoE stage 'intermediate'" in log
    assert "RMoE stage 'finetune'" in log
    ranks = [torch.load(tmp_path / f'rank{r}_params.pt') for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    different = [
        k for k in ranks[0] if not torch.equal(ranks[0][k], ranks[1][k])
    ]
    assert different == []
    # The run did train across the switch: the core moved from its start.
    start = torch.load(tmp_path / 'rank0_start.pt')
    assert not torch.equal(start['backbone.stem.weight'],
                           ranks[0]['backbone.stem.weight'])
    assert torch.equal(
        start['backbone.stem.weight'],
        torch.load(tmp_path / 'rank0_switch.pt')['backbone.stem.weight'])
