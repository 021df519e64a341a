"""RMoEStageHook: what trains in each stage, and that nothing frozen moves.

Most tests read one 6-iteration toy run (tests/hooks/toy_rmoe.py) whose core
is frozen for iterations 0-2 ('intermediate') and trains from iteration 3
('finetune'). "Unchanged" means bit-identical (torch.equal); "changed" means
not bit-identical.
"""
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapper

from rmoe_mm.hooks import RMoEStageHook
from rmoe_mm.moe import split_parameters
from rmoe_mm.testing.toy_rmoe import build_toy_runner, snapshot

SWITCH = 3
RMOE_I = [
    dict(name='intermediate', begin=0, frozen=['core']),
    dict(name='finetune', begin=SWITCH)
]


class Recorder(Hook):
    """Snapshots of the model and optimizer-state keys before the first and
    after every training iteration, plus the losses."""

    priority = 'LOWEST'

    def __init__(self):
        self.states, self.losses, self.optim_state_ids = {}, {}, {}
        self.requires_grad = {}

    def before_train(self, runner):
        self.states[0] = snapshot(runner.model)

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.requires_grad[runner.iter] = {
            n: p.requires_grad
            for n, p in runner.model.named_parameters()
        }

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None):
        self.states[runner.iter + 1] = snapshot(runner.model)
        self.losses[runner.iter + 1] = outputs['loss'].item()
        self.optim_state_ids[runner.iter + 1] = {
            id(p)
            for p in runner.optim_wrapper.optimizer.state
        }


@pytest.fixture(scope='module')
def rmoe_i_run(tmp_path_factory):
    recorder = Recorder()
    runner = build_toy_runner(
        tmp_path_factory.mktemp('rmoe_i'),
        RMOE_I,
        max_iters=6,
        extra_hooks=[recorder])
    runner.train()
    roles = {
        role: [name for name, _ in named]
        for role, named in split_parameters(runner.model).items()
    }
    return runner, recorder, roles


def changed(before, after, names):
    return {n for n in names if not torch.equal(before[n], after[n])}


def test_roles_split_backbone_core_residuals_routers_and_heads(rmoe_i_run):
    _, _, roles = rmoe_i_run
    assert set(roles['core']) == {
        'backbone.stem.weight', 'backbone.stem.bias', 'backbone.norm.weight',
        'backbone.norm.bias', 'backbone.ffn.layers.0.0.weight',
        'backbone.ffn.layers.0.0.bias', 'backbone.ffn.layers.1.weight',
        'backbone.ffn.layers.1.bias'
    }
    assert roles['residual'] and all('.residual.' in n
                                     for n in roles['residual'])
    assert roles['router'] and all('.router.' in n for n in roles['router'])
    assert set(roles['heads']) == {'head.weight', 'head.bias'}


def test_intermediate_stage_keeps_every_core_parameter_bit_identical(
        rmoe_i_run):
    _, rec, roles = rmoe_i_run
    assert changed(rec.states[0], rec.states[SWITCH], roles['core']) == set()


def test_intermediate_stage_trains_residuals_routers_and_heads(rmoe_i_run):
    _, rec, roles = rmoe_i_run
    for role in ('residual', 'router', 'heads'):
        assert changed(rec.states[0], rec.states[SWITCH],
                       roles[role]) == set(roles[role]), role


def test_core_trains_after_the_switch(rmoe_i_run):
    _, rec, roles = rmoe_i_run
    assert changed(rec.states[SWITCH], rec.states[6],
                   roles['core']) == set(roles['core'])


def test_frozen_core_gets_no_optimizer_state_until_the_switch(rmoe_i_run):
    # AdamW with weight_decay=0.1: a param with state would have been
    # decayed and would carry momentum.
    runner, rec, roles = rmoe_i_run
    params = dict(runner.model.named_parameters())
    core_ids = {id(params[n]) for n in roles['core']}
    assert not core_ids & rec.optim_state_ids[SWITCH]
    assert core_ids <= rec.optim_state_ids[SWITCH + 1]


def test_frozen_batchnorm_running_stats_stay_put_until_the_switch(rmoe_i_run):
    _, rec, _ = rmoe_i_run
    stats = ['backbone.norm.running_mean', 'backbone.norm.running_var']
    assert changed(rec.states[0], rec.states[SWITCH], stats) == set()
    assert changed(rec.states[SWITCH], rec.states[6], stats) == set(stats)


def test_requires_grad_follows_the_stage_at_every_iteration(rmoe_i_run):
    _, rec, roles = rmoe_i_run
    for it, flags in rec.requires_grad.items():
        for name in roles['core']:
            assert flags[name] == (it >= SWITCH), (it, name)
        for name in roles['residual'] + roles['router'] + roles['heads']:
            assert flags[name], (it, name)


def test_stage_name_is_published_in_the_message_hub(rmoe_i_run):
    runner, _, _ = rmoe_i_run
    assert runner.message_hub.get_info('rmoe_stage') == 'finetune'
    assert runner.message_hub.get_scalar('train/rmoe_stage').current() == 1


def test_heads_can_be_frozen_with_the_core(tmp_path):
    recorder = Recorder()
    runner = build_toy_runner(
        tmp_path,
        [dict(name='residuals_only', begin=0, frozen=['core', 'heads'])],
        max_iters=2,
        extra_hooks=[recorder])
    runner.train()
    roles = {
        r: [n for n, _ in named]
        for r, named in split_parameters(runner.model).items()
    }
    assert changed(recorder.states[0], recorder.states[2],
                   roles['core'] + roles['heads']) == set()
    assert changed(recorder.states[0], recorder.states[2],
                   roles['residual']) == set(roles['residual'])


def test_stages_by_epoch_switch_at_the_first_iteration_of_the_epoch(tmp_path):
    recorder = Recorder()
    runner = build_toy_runner(
        tmp_path, [
            dict(name='intermediate', begin=0, frozen='core'),
            dict(name='finetune', begin=1)
        ],
        max_iters=2,
        by_epoch=True,
        extra_hooks=[recorder])
    runner.train()
    iters_per_epoch = len(runner.train_dataloader)  # 64 samples / 16
    core = 'backbone.stem.weight'
    assert [recorder.requires_grad[i][core]
            for i in range(2 * iters_per_epoch)] == \
        [False] * iters_per_epoch + [True] * iters_per_epoch


def test_balance_loss_gradient_scale_follows_gradient_accumulation(tmp_path):
    # mmengine divides the loss by accumulative_counts (4), and by the
    # remainder (6 % 4 = 2) in the last, incomplete window; the injected
    # balance-loss gradient must be scaled alike.

    class ScaleProbe(Hook):
        priority = 'LOWEST'

        def __init__(self):
            self.seen = []

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            self.seen.append(runner.model.backbone.ffn.aux_grad_scale)

    probe = ScaleProbe()
    runner = build_toy_runner(
        tmp_path,
        RMOE_I,
        max_iters=6,
        extra_hooks=[probe],
        optim_wrapper=dict(
            optimizer=dict(type='AdamW', lr=0.01), accumulative_counts=4))
    runner.train()
    assert probe.seen == [0.25, 0.25, 0.25, 0.25, 0.5, 0.5]
    assert runner.model.backbone.ffn.aux_grad_scale == 1.0  # restored


def test_a_trainable_parameter_missing_from_the_optimizer_is_an_error(
        tmp_path):
    runner = build_toy_runner(tmp_path, RMOE_I, max_iters=1)
    head_only = torch.optim.AdamW(runner.model.head.parameters(), lr=0.01)
    runner.optim_wrapper = OptimWrapper(head_only)
    with pytest.raises(RuntimeError, match='not in the optimizer'):
        runner.train()


@pytest.mark.parametrize('stages, message', [
    ([], 'non-empty list'),
    ([dict(name='a', begin=1)], 'first stage must begin at 0'),
    ([dict(name='a', begin=0),
      dict(name='b', begin=0)], 'strictly increasing'),
    ([dict(name='a', begin=0),
      dict(name='a', begin=2)], 'unique'),
    ([dict(name='a', begin=0, frozen=['cores'])], 'unknown role'),
    ([dict(name='a', begin=0, frozen=['core', 'residual', 'router', 'heads'])
      ], 'nothing would train'),
    ([dict(name='a', begin=0, lr=1)], 'unknown key'),
    ([dict(name='', begin=0)], 'non-empty string'),
    ([dict(name='a', begin=-1)], 'int >= 0'),
])
def test_impossible_schedules_raise_clear_errors(stages, message):
    with pytest.raises(ValueError, match=message):
        RMoEStageHook(stages=stages)


def test_by_epoch_with_an_iteration_loop_is_an_error(tmp_path):
    runner = build_toy_runner(
        tmp_path, [dict(name='a', begin=0, frozen='core')],
        max_iters=1,
        stage_kwargs=dict(by_epoch=True))
    with pytest.raises(ValueError, match='epoch-based train loop'):
        runner.train()


def test_unknown_backbone_path_is_an_error(tmp_path):
    runner = build_toy_runner(
        tmp_path, RMOE_I, max_iters=1, stage_kwargs=dict(backbone='encoder'))
    with pytest.raises(ValueError, match="no submodule 'encoder'"):
        runner.train()
