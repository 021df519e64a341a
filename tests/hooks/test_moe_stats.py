"""MoEStatsHook: balance loss, expert load and stage reach the log and the
visualizer backends, aggregated as documented.

Reference: a probe hook that reads the RMoE FFN's statistics after every
iteration, independently of MoEStatsHook. The toy run has one MoE layer
('backbone.ffn', logged as 'ffn'), 16 tokens per iteration, top-1, and logs
every 2 iterations. Tolerance: 1e-6 relative (float32 values through JSON).
"""
import json

import pytest
from mmengine.hooks import Hook

from rmoe_mm.hooks.moe_stats import short_layer_name
from rmoe_mm.moe import collect_moe_stats
from rmoe_mm.testing.toy_rmoe import NUM_EXPERTS, build_toy_runner

STAGES = [
    dict(name='intermediate', begin=0, frozen=['core']),
    dict(name='finetune', begin=2)
]
WEIGHT = 0.1  # balance_loss_weight of the toy RMoE FFN


class StatsProbe(Hook):
    priority = 'LOWEST'

    def __init__(self):
        self.per_iter = {}

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None):
        self.per_iter[runner.iter + 1] = collect_moe_stats(
            runner.model)['backbone.ffn']


@pytest.fixture(scope='module')
def logged_run(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('stats')
    probe = StatsProbe()
    runner = build_toy_runner(
        work_dir,
        STAGES,
        max_iters=4,
        log_interval=2,
        extra_hooks=[dict(type='MoEStatsHook'), probe])
    runner.train()
    log_text = next(work_dir.glob('*/*.log')).read_text()
    records = [
        json.loads(line) for line in next(
            work_dir.glob('*/vis_data/scalars.json')).read_text().splitlines()
    ]
    return probe, log_text, records


def merged_record(records, step):
    merged = {}
    for record in records:
        if record.get('step', record.get('iter')) == step:
            merged.update(record)
    return merged


def test_short_layer_names_drop_backbone_prefix_and_ffn_suffix():
    assert short_layer_name('backbone.stages.2.blocks.1.ffn') == \
        'stages.2.blocks.1'
    assert short_layer_name('neck.ffn') == 'neck'


def test_log_lines_carry_balance_loss_load_and_stage(logged_run):
    _, log_text, _ = logged_run
    for key in ('moe/balance_loss', 'moe/ffn/balance_loss',
                'moe/ffn/imbalance', 'moe/ffn/dropped', 'rmoe_stage'):
        assert key in log_text, key
    assert 'MoE [stage: intermediate] tokens per expert' in log_text
    assert 'MoE [stage: finetune] tokens per expert' in log_text


@pytest.mark.parametrize('step', [2, 4])
def test_expert_load_is_summed_over_the_log_interval(logged_run, step):
    probe, _, records = logged_run
    record = merged_record(records, step)
    expected = [
        sum(probe.per_iter[it]['tokens_per_expert'][e]
            for it in (step - 1, step)) for e in range(NUM_EXPERTS)
    ]
    logged = [record[f'moe/ffn/expert_{e}'] for e in range(NUM_EXPERTS)]
    assert logged == expected
    assert sum(logged) == 2 * 16  # every token reaches one expert
    assert record['moe/ffn/imbalance'] == pytest.approx(
        max(expected) / (sum(expected) / NUM_EXPERTS), rel=1e-6)
    assert record['moe/ffn/dropped'] == 0  # dropless by default


def test_balance_loss_is_smoothed_like_mmengine_losses(logged_run):
    probe, _, records = logged_run
    record = merged_record(records, 4)
    per_layer = [probe.per_iter[it]['balance_loss'] for it in (1, 2, 3, 4)]
    assert record['moe/ffn/balance_loss'] == pytest.approx(
        sum(per_layer) / 4, rel=1e-6)
    assert record['moe/balance_loss'] == pytest.approx(
        WEIGHT * sum(per_layer) / 4, rel=1e-6)
    assert record['rmoe_stage'] == 1


def test_statistics_reach_tensorboard(tmp_path):
    pytest.importorskip('tensorboard')
    from tensorboard.backend.event_processing.event_accumulator import \
        EventAccumulator
    runner = build_toy_runner(
        tmp_path,
        STAGES,
        max_iters=2,
        log_interval=2,
        extra_hooks=[dict(type='MoEStatsHook')],
        visualizer=dict(
            type='Visualizer',
            vis_backends=[dict(type='TensorboardVisBackend')]))
    runner.train()
    events = EventAccumulator(str(next(tmp_path.glob('*/vis_data'))))
    events.Reload()
    tags = set(events.Tags()['scalars'])
    assert {'moe/balance_loss', 'moe/ffn/imbalance',
            'moe/ffn/expert_0'} <= tags
