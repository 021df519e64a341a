"""tools/train.py, --resume and tools/test.py on toy data, mmseg and mmdet.

Each library gets one short run (train 4 iterations with a validation and a
checkpoint at iteration 2 and 4), a resume that continues it to iteration 6,
and a test of the saved checkpoint. The reference is mmengine's own record of
the run: the iteration counter in the checkpoint and the log.
"""
import json
from pathlib import Path

import pytest

from rmoe_mm.checkpoint import load_checkpoint_file
from rmoe_mm.testing import run_tool

pytestmark = pytest.mark.slow  # runs the tools as subprocesses

SEG_CONFIG = 'configs/toy/swin_upernet_toy_ade20k.py'
DET_CONFIG = 'configs/toy/swin_mask_rcnn_toy_coco.py'


def short_schedule(max_iters):
    return [
        f'train_cfg.max_iters={max_iters}', 'train_cfg.val_interval=2',
        'default_hooks.checkpoint.interval=2',
        'default_hooks.checkpoint.max_keep_ckpts=-1',
        'default_hooks.logger.interval=1', 'param_scheduler=[]'
    ]


def checkpoint_iter(path):
    return load_checkpoint_file(path, map_location='cpu')['meta']['iter']


@pytest.fixture(scope='module', params=['seg', 'det'])
def trained(request, tmp_path_factory):
    """(config, options, work_dir) of a 4-iteration run of each library."""
    if request.param == 'seg':
        config, options = SEG_CONFIG, request.getfixturevalue(
            'toy_ade20k_options')
    else:
        config, options = DET_CONFIG, request.getfixturevalue(
            'toy_coco_options')
    work_dir = tmp_path_factory.mktemp(f'{request.param}_run')
    run_tool('tools/train.py', config, '--work-dir', work_dir, '--cfg-options',
             *options, *short_schedule(4))
    return config, options, work_dir


def test_train_saves_checkpoints_and_validates(trained):
    config, _, work_dir = trained
    assert checkpoint_iter(work_dir / 'iter_4.pth') == 4
    assert Path((work_dir /
                 'last_checkpoint').read_text().strip()).name == 'iter_4.pth'
    scalars = next(work_dir.glob('2*/vis_data/scalars.json')).read_text()
    metric = 'mIoU' if 'upernet' in config else 'coco/bbox_mAP'
    assert metric in scalars, scalars[-2000:]


def test_resume_continues_from_last_checkpoint(trained):
    config, options, work_dir = trained
    proc = run_tool('tools/train.py', config, '--work-dir', work_dir,
                    '--resume', '--cfg-options', *options, *short_schedule(6))
    log = proc.stdout + proc.stderr
    assert 'resumed epoch: 0, iter: 4' in log, log[-3000:]
    assert checkpoint_iter(work_dir / 'iter_6.pth') == 6
    # iterations 5 and 6 were trained, 1-4 were not trained again
    train_iters = [
        json.loads(line)['step']
        for line in sorted(work_dir.glob('2*/vis_data/scalars.json'))
        [-1].read_text().splitlines() if '"loss"' in line
    ]
    assert train_iters == [5, 6], train_iters


def test_resume_from_explicit_checkpoint(trained, tmp_path):
    config, options, work_dir = trained
    run_tool('tools/train.py', config, '--work-dir', tmp_path, '--resume',
             work_dir / 'iter_2.pth', '--cfg-options', *options,
             *short_schedule(4))
    assert checkpoint_iter(tmp_path / 'iter_4.pth') == 4
    assert not (tmp_path / 'iter_2.pth').exists()


def test_test_tool_evaluates_checkpoint(trained, tmp_path):
    config, options, work_dir = trained
    out = tmp_path / ('preds' if 'upernet' in config else 'results.pkl')
    run_tool('tools/test.py', config, work_dir / 'iter_4.pth', '--work-dir',
             tmp_path / 'test', '--out', out, '--cfg-options', *options)
    metrics = json.loads(
        next((tmp_path / 'test').glob('*/*.json')).read_text())
    key = 'mIoU' if 'upernet' in config else 'coco/bbox_mAP'
    assert key in metrics, metrics
    assert out.exists()


def test_amp_on_cpu_trains_rmoe_under_bf16_autocast(toy_ade20k_options,
                                                    tmp_path):
    """--amp without CUDA selects CPUAutocastOptimWrapper (bf16 autocast)."""
    run_tool('tools/train.py', 'configs/toy/rmoe_swin_upernet_toy_ade20k.py',
             '--amp', '--work-dir', tmp_path, '--cfg-options',
             *toy_ade20k_options, 'train_cfg.max_iters=2',
             'train_cfg.val_interval=100',
             'default_hooks.checkpoint.interval=2',
             'default_hooks.logger.interval=1', 'param_scheduler=[]')
    log = next(tmp_path.glob('2*/2*.log')).read_text()
    assert "type='CPUAutocastOptimWrapper'" in log
    losses = [
        json.loads(line)['loss']
        for line in next(tmp_path.glob(
            '2*/vis_data/scalars.json')).read_text().splitlines()
        if '"loss"' in line
    ]
    assert len(losses) == 2 and all(loss == loss for loss in losses), losses
