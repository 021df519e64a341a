"""tools/dist_train.sh and tools/dist_test.sh run 2 CPU processes (gloo)."""
import json
import socket

import pytest

from rmoe_mm.checkpoint import load_checkpoint_file
from rmoe_mm.testing import run_tool

pytestmark = pytest.mark.slow  # 2 tool processes

SEG_CONFIG = 'configs/toy/swin_upernet_toy_ade20k.py'


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_dist_train_and_test_with_two_cpu_processes(toy_ade20k_options,
                                                    tmp_path):
    schedule = [
        'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
        'default_hooks.checkpoint.interval=2',
        'default_hooks.logger.interval=1', 'param_scheduler=[]',
        'train_dataloader.batch_size=2'
    ]
    proc = run_tool(
        'tools/dist_train.sh',
        SEG_CONFIG,
        2,
        '--work-dir',
        tmp_path,
        '--cfg-options',
        *toy_ade20k_options,
        *schedule,
        env={
            'PORT': str(free_port()),
            'OMP_NUM_THREADS': '1'
        })
    log = next(tmp_path.glob('2*/2*.log')).read_text()
    assert 'Distributed training: True' in log
    assert 'GPU number: 2' in log or 'world_size: 2' in log or \
        "'world_size': 2" in log, log[:3000]
    assert load_checkpoint_file(tmp_path / 'iter_2.pth')['meta']['iter'] == 2

    run_tool(
        'tools/dist_test.sh',
        SEG_CONFIG,
        tmp_path / 'iter_2.pth',
        2,
        '--work-dir',
        tmp_path / 'test',
        '--cfg-options',
        *toy_ade20k_options,
        env={
            'PORT': str(free_port()),
            'OMP_NUM_THREADS': '1'
        })
    metrics = json.loads(
        next((tmp_path / 'test').glob('*/*.json')).read_text())
    assert 'mIoU' in metrics
    del proc
