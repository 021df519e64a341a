"""``--resume`` through the safe loader and the tools' whole-model guard.

Reference: the uninterrupted toy RMoE-I run (as tests/hooks/test_resume.py).
Resumed from iteration 2 with ``guard_model_loads(model, 'resume')`` (what
``tools/train.py --resume`` installs), the losses of iterations 3-6 and the
final parameters are bit-identical; a checkpoint that lacks a tensor stops
the resume before the optimizer state or the iteration counter moves.
"""
import pytest
import torch
from mmengine.hooks import Hook

from rmoe_mm.checkpoint import load_checkpoint_file
from rmoe_mm.checkpoint.fit import CheckpointMismatchError, guard_model_loads
from rmoe_mm.testing.toy_rmoe import build_toy_runner, snapshot

STAGES = [
    dict(name='intermediate', begin=0, frozen=['core']),
    dict(name='finetune', begin=4)
]


class Losses(Hook):
    priority = 'LOWEST'

    def __init__(self):
        self.losses = {}

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None):
        self.losses[runner.iter + 1] = outputs['loss'].item()


@pytest.fixture(scope='module')
def full_run(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('full')
    losses = Losses()
    runner = build_toy_runner(
        work_dir,
        STAGES,
        max_iters=6,
        checkpoint_interval=2,
        extra_hooks=[losses])
    runner.train()
    return work_dir, losses.losses, snapshot(runner.model)


def test_guarded_resume_is_bit_exact(full_run, tmp_path):
    work_dir, full_losses, full_final = full_run
    losses = Losses()
    runner = build_toy_runner(
        tmp_path,
        STAGES,
        max_iters=6,
        extra_hooks=[losses],
        resume=True,
        load_from=str(work_dir / 'iter_2.pth'))
    guard_model_loads(runner.model, 'resume')
    runner.train()
    assert losses.losses == {it: full_losses[it] for it in (3, 4, 5, 6)}
    final = snapshot(runner.model)
    assert all(torch.equal(full_final[k], final[k]) for k in full_final)


def test_incomplete_checkpoint_stops_before_the_optimizer(full_run, tmp_path):
    work_dir, _, _ = full_run
    checkpoint = load_checkpoint_file(work_dir / 'iter_2.pth')
    del checkpoint['state_dict']['head.weight']
    torch.save(checkpoint, tmp_path / 'cut.pth')
    runner = build_toy_runner(
        tmp_path / 'run',
        STAGES,
        max_iters=6,
        resume=True,
        load_from=str(tmp_path / 'cut.pth'))
    guard_model_loads(runner.model, 'resume')
    with pytest.raises(CheckpointMismatchError, match='head.weight'):
        runner.train()
    assert runner.iter == 0
    assert len(runner.optim_wrapper.optimizer.state) == 0
