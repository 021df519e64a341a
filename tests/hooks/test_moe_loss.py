"""MoELossHook: the balance loss as ``loss_moe`` in the losses and the log.

Reference: the toy RMoE FFN's own unweighted balance loss of each iteration
(read by a probe hook) times its weight, and an identical run in the default
injected-gradient mode. Tolerances: 1e-6 (float32 values through JSON), 1e-6
on the parameters after 3 SGD steps.
"""
import json

import pytest
import torch
from mmengine.hooks import Hook

from rmoe_mm.testing.toy_rmoe import build_toy_runner, snapshot

STAGES = [dict(name='all', begin=0)]
WEIGHT = 0.1  # balance_loss_weight of the toy RMoE FFN
SGD = dict(optimizer=dict(type='SGD', lr=0.1))


class BalanceLossProbe(Hook):
    priority = 'LOWEST'

    def __init__(self):
        self.balance_loss, self.mode = {}, {}

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None):
        ffn = runner.model.backbone.ffn
        self.balance_loss[runner.iter + 1] = ffn.last_balance_loss.item()
        self.mode[runner.iter + 1] = ffn.balance_loss_mode


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    results = {}
    for name, hooks in (('injected', []), ('loss', [dict(type='MoELossHook')
                                                    ])):
        work_dir = tmp_path_factory.mktemp(name)
        probe = BalanceLossProbe()
        runner = build_toy_runner(
            work_dir,
            STAGES,
            max_iters=3,
            optim_wrapper=SGD,
            log_processor=dict(window_size=1),
            extra_hooks=[*hooks, probe])
        runner.train()
        records = [
            json.loads(line)
            for line in next(work_dir.glob(
                '*/vis_data/scalars.json')).read_text().splitlines()
        ]
        results[name] = (runner, probe, records)
    return results


def test_loss_moe_is_weight_times_balance_loss_and_in_the_summed_loss(runs):
    runner, probe, records = runs['loss']
    assert len(records) == 3
    for record in records:
        expected = WEIGHT * probe.balance_loss[record['iter']]
        assert record['loss_moe'] == pytest.approx(expected, rel=1e-6)
        assert record['loss'] == pytest.approx(
            record['loss_cls'] + record['loss_moe'], rel=1e-6)
    assert set(probe.mode.values()) == {'loss'}
    # Back to the injected gradient once training ends.
    assert runner.model.backbone.ffn.balance_loss_mode == 'gradient'


def test_loss_moe_trains_exactly_as_the_injected_gradient(runs):
    injected, _, injected_records = runs['injected']
    as_loss, _, _ = runs['loss']
    assert all('loss_moe' not in record for record in injected_records)
    expected = snapshot(injected.model)
    got = snapshot(as_loss.model)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=1e-6, msg=key)
