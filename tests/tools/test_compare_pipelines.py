"""tools/analysis/compare_pipelines.py and the pipeline spec format.

The run test compares 2 pipelines (dense, RMoE-D) x 2 seeds of the toy
ADE20K spec at its smallest (2 iterations per stage, 64 px toy data): 5
tools/train.py processes (the shared dense pretraining once), about a
minute on 2 idle CPU cores (marked slow), then ``--report-only`` with a
seed that has no runs.
"""
import json

import pytest

from rmoe_mm.engine.pipeline_spec import (PipelineSpec,
                                          pretrained_checkpoint_keys)
from rmoe_mm.testing import REPO_ROOT, run_tool

SPEC = REPO_ROOT / 'configs' / 'pipelines' / 'specs' / \
    'swin_upernet_toy_ade20k.py'


def test_spec_chains_follow_init_from():
    spec = PipelineSpec(SPEC)
    assert spec.chain('dense') == ['dense_pretrain', 'dense']
    assert spec.chain('rmoe_i') == [
        'dense_pretrain', 'rmoe_intermediate', 'rmoe_i'
    ]
    assert spec.chain('full_moe') == ['moe_pretrain', 'full_moe']
    assert spec.stages['dense_pretrain']['shared']
    assert not spec.stages['rmoe_intermediate']['shared']


def test_spec_errors_name_the_problem(tmp_path):
    bad = tmp_path / 'bad.py'
    bad.write_text("stages = dict(a=dict(config='x.py', init_from='b'))\n"
                   "pipelines = dict(p='a')\n")
    with pytest.raises(ValueError, match="unknown stage 'b'"):
        PipelineSpec(bad)
    bad.write_text("stages = dict(a=dict(config='x.py', init='b'))\n")
    with pytest.raises(ValueError, match=r"unknown keys \['init'\]"):
        PipelineSpec(bad)
    bad.write_text("stages = dict(a=dict(config='x.py', init_from='b'),\n"
                   "              b=dict(config='y.py', init_from='a'))\n"
                   "pipelines = dict(p='a')\n")
    with pytest.raises(ValueError, match='loop'):
        PipelineSpec(bad)
    with pytest.raises(ValueError, match="unknown pipeline 'q'"):
        PipelineSpec(SPEC).chain('q')


def test_every_pretrained_checkpoint_of_a_model_is_found():
    model = dict(
        backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='a')),
        head=dict(init_cfg=[
            dict(type='Normal'),
            dict(type='PretrainedHead', checkpoint='a')
        ]),
        neck=dict(init_cfg=None))
    assert pretrained_checkpoint_keys(model) == [
        'model.backbone.init_cfg.checkpoint',
        'model.head.init_cfg.1.checkpoint'
    ]


@pytest.mark.slow  # five tools/train.py processes
def test_two_pipelines_two_seeds_write_json_and_png(tmp_path, toy_data_tool):
    data = tmp_path / 'data'
    common = {
        'train_cfg.max_iters': 2,
        'train_cfg.val_interval': 2,
        'train_dataloader.batch_size': 2,
        'default_hooks.checkpoint.interval': 2,
        'default_hooks.logger.interval': 1,
    }
    roots = dict(
        cls=data / 'toy_imagenet',
        seg=data / 'toy_ade20k' / 'ADEChallengeData2016')
    options = {
        kind:
        dict(
            common, **{
                f'{split}_dataloader.dataset.data_root': str(root)
                for split in ('train', 'val', 'test')
            })
        for kind, root in roots.items()
    }
    spec = tmp_path / 'smallest.py'
    spec.write_text(
        f'_base_ = [{str(SPEC)!r}]\n'
        "data = [dict(dataset='imagenet', num_train=16, num_val=16, "
        'size=64),\n'
        "        dict(dataset='ade20k', num_train=8, num_val=4, size=64)]\n"
        f"stages = dict(dense_pretrain=dict(options={options['cls']!r}),\n"
        f"              dense=dict(options={options['seg']!r}),\n"
        f"              rmoe_d=dict(options={options['seg']!r}))\n")
    work_dir = tmp_path / 'work'
    proc = run_tool('tools/analysis/compare_pipelines.py', spec, '--pipelines',
                    'dense', 'rmoe_d', '--seeds', '0', '1', '--work-dir',
                    work_dir, '--data-root', data, '--threads', '1')
    out = json.loads((work_dir / 'comparison.json').read_text())
    assert (work_dir / 'comparison.png').stat().st_size > 10000
    assert list(out['pipelines']) == ['dense', 'rmoe_d']
    for name in ('dense', 'rmoe_d'):
        mious = out['pipelines'][name]['metrics']['mIoU']
        assert len(mious['values']) == 2
        assert mious['mean'] == pytest.approx(sum(mious['values']) / 2)
    runs = {(r['stage'], r['seed']) for r in out['runs']}
    assert runs == {('dense_pretrain', None), ('dense', 0), ('dense', 1),
                    ('rmoe_d', 0), ('rmoe_d', 1)}
    pretrain = next(r for r in out['runs'] if r['stage'] == 'dense_pretrain')
    for run in out['runs']:
        if run['stage'] != 'dense_pretrain':
            assert run['init_checkpoint'] == pretrain['checkpoint']
            assert run['options']['model.backbone.init_cfg.checkpoint'] == \
                pretrain['checkpoint']
    assert 'mIoU' in proc.stdout and 'rmoe_d [seed_1]' in proc.stdout
    # a second call reuses every finished run
    again = run_tool('tools/analysis/compare_pipelines.py', spec,
                     '--pipelines', 'dense', '--seeds', '0', '--work-dir',
                     work_dir, '--data-root', data)
    assert 'reused' in again.stdout and 'iter' not in again.stdout
    # --report-only runs nothing and names the seeds a pipeline lacks
    report = run_tool('tools/analysis/compare_pipelines.py', spec,
                      '--pipelines', 'dense', 'rmoe_d', '--seeds', '0', '1',
                      '2', '--work-dir', work_dir, '--report-only')
    assert 'iter' not in report.stdout
    assert 'dense: no result for seed(s) 2' in report.stdout
    out = json.loads((work_dir / 'comparison.json').read_text())
    assert out['pipelines']['dense']['seeds'] == [0, 1]
    assert out['pipelines']['dense']['missing_seeds'] == [2]
    assert len(out['pipelines']['rmoe_d']['metrics']['mIoU']['values']) == 2
