"""Resuming an RMoE-I run in the middle of its intermediate stage.

Reference: the same toy run (gate noise and dropout on, seed 0, deterministic
mode) without interruption. The resumed run restarts from the checkpoint of
iteration 2, inside the intermediate stage (the core trains from iteration 4),
and must reproduce the uninterrupted losses of iterations 3-6 exactly and end
with bit-identical parameters.
"""
import torch
from mmengine.hooks import Hook

from rmoe_mm.testing.toy_rmoe import build_toy_runner, snapshot

STAGES = [
    dict(name='intermediate', begin=0, frozen=['core']),
    dict(name='finetune', begin=4)
]


class LossRecorder(Hook):
    priority = 'LOWEST'

    def __init__(self):
        self.losses, self.core_frozen_at_start = {}, None

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if self.core_frozen_at_start is None:
            self.core_frozen_at_start = \
                not runner.model.backbone.stem.weight.requires_grad

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None):
        self.losses[runner.iter + 1] = outputs['loss'].item()


def test_resume_mid_stage_restores_the_stage_and_repeats_the_losses(tmp_path):
    full = LossRecorder()
    runner = build_toy_runner(
        tmp_path / 'full',
        STAGES,
        max_iters=6,
        checkpoint_interval=2,
        extra_hooks=[full])
    runner.train()
    final_full = snapshot(runner.model)

    resumed = LossRecorder()
    runner = build_toy_runner(
        tmp_path / 'resumed',
        STAGES,
        max_iters=6,
        extra_hooks=[resumed],
        resume=True,
        load_from=str(tmp_path / 'full' / 'iter_2.pth'))
    runner.train()

    assert resumed.core_frozen_at_start  # iteration 2 is intermediate
    assert sorted(resumed.losses) == [3, 4, 5, 6]
    assert resumed.losses == {it: full.losses[it] for it in (3, 4, 5, 6)}
    final_resumed = snapshot(runner.model)
    assert all(
        torch.equal(final_full[k], final_resumed[k]) for k in final_full)
