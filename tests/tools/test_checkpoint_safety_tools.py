"""The tools, run as a user runs them, against hostile and unfitting
checkpoints, missing paths and broken resumes.

SLOW: every test runs ``tools/train.py``, ``tools/test.py`` or the
converter in a subprocess (about 10-20 s each; 12 runs). The payloads and
mismatch cases are covered in-process by tests/checkpoint/; here each entry
point is run once per concern: the exit code, the message, and (for hostile
files) that the marker never appears. URL checkpoints are ``https://`` names
whose file sits in torch hub's cache (``TORCH_HOME``), so no network is used.
"""
import os
import shutil
import subprocess
import sys

import pytest

from rmoe_mm.testing import REPO_ROOT
from rmoe_mm.testing.malicious import PAYLOADS

pytestmark = pytest.mark.slow  # the tools in subprocesses

TOY = 'configs/toy/rmoe_swin_upernet_toy_ade20k.py'
SCHEDULE = [
    'train_cfg.val_interval=100', 'default_hooks.checkpoint.interval=1',
    'default_hooks.logger.interval=1', 'param_scheduler=[]'
]
E4 = 'model.backbone.moe_cfg.num_experts=4'
E8 = 'model.backbone.moe_cfg.num_experts=8'
EVIL_URL = 'https://example.invalid/models/evil.pth'


def run(*args, cwd=REPO_ROOT, env=None, timeout=600):
    """``python ARGS``; returns the finished process (any exit code)."""
    path = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get('PYTHONPATH')) if p)
    full_env = dict(os.environ, PYTHONPATH=path, **(env or {}))
    proc = subprocess.run([sys.executable, *map(str, args)],
                          cwd=cwd,
                          capture_output=True,
                          text=True,
                          timeout=timeout,
                          env=full_env)
    proc.output = proc.stdout + proc.stderr
    return proc


def ok(proc):
    assert proc.returncode == 0, proc.output[-5000:]
    return proc


def failed(proc, *texts):
    """Exit code 1 with a message, not a traceback (or a crash)."""
    assert proc.returncode == 1, (proc.returncode, proc.output[-5000:])
    assert 'Traceback' not in proc.output, proc.output[-5000:]
    for text in texts:
        assert text in proc.output, proc.output[-5000:]
    return proc


@pytest.fixture(scope='module')
def e4_run(toy_ade20k_options, tmp_path_factory):
    """A 1-iteration RMoE toy run with 4 experts, started with ``--resume``
    in an empty work dir; ``(process, work_dir)``."""
    work_dir = tmp_path_factory.mktemp('e4_run')
    proc = ok(
        run('tools/train.py', TOY, '--work-dir', work_dir, '--resume',
            '--cfg-options', *toy_ade20k_options, *SCHEDULE,
            'train_cfg.max_iters=1', E4))
    return proc, work_dir


@pytest.fixture
def hub(tmp_path):
    """``(env with TORCH_HOME, marker)``: EVIL_URL's file in the hub cache
    runs ``touch marker`` when fully unpickled."""
    cache = tmp_path / 'torch_home' / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    marker = tmp_path / 'marker'
    PAYLOADS['os.system'][0](str(cache / 'evil.pth'), str(marker))
    return {'TORCH_HOME': str(tmp_path / 'torch_home')}, marker


# ----------------------------------------------------- missing paths
def test_headline_command_on_a_fresh_machine(tmp_path):
    config = REPO_ROOT / 'configs/rmoe_swin_t_upernet_ade20k.py'
    proc = failed(
        run(REPO_ROOT / 'tools/train.py', config,
            cwd=tmp_path), 'PreflightError', 'needs 2 paths that are missing',
        'data/ade/ADEChallengeData2016', 'docs/datasets.md',
        'checkpoints/swin_tiny_patch4_window7_224.pth', 'docs/swin.md', TOY)
    lines = [
        line for line in proc.stderr.splitlines()
        if 'pkg_resources' not in line and '_bootstrap' not in line
    ]
    assert len(lines) <= 12, proc.stderr
    assert not (tmp_path / 'work_dirs').exists()


# ------------------------------------------------------------- resume
def test_resume_with_nothing_to_resume_warns_first(e4_run):
    proc, work_dir = e4_run
    log = next(work_dir.glob('2*/2*.log')).read_text().splitlines()
    assert 'WARNING - --resume: nothing to resume in' in log[0], log[:3]
    assert (work_dir / 'iter_1.pth').exists()


def test_resume_past_an_empty_last_checkpoint(e4_run, toy_ade20k_options,
                                              tmp_path):
    _, source = e4_run
    work_dir = tmp_path / 'run'
    shutil.copytree(source, work_dir)
    (work_dir / 'last_checkpoint').write_text('')
    proc = ok(
        run('tools/train.py', TOY, '--work-dir', work_dir, '--resume',
            '--cfg-options', *toy_ade20k_options, *SCHEDULE,
            'train_cfg.max_iters=2', E4))
    assert 'last_checkpoint is empty' in proc.output
    assert f'newest intact checkpoint instead: {work_dir}/iter_1.pth' in \
        proc.output
    assert 'resumed epoch: 0, iter: 1' in proc.output
    assert (work_dir / 'iter_2.pth').exists()


def test_resume_with_other_expert_count_stops_before_the_optimizer(
        e4_run, toy_ade20k_options, tmp_path):
    _, source = e4_run
    proc = failed(
        run('tools/train.py', TOY, '--work-dir', tmp_path, '--resume',
            source / 'iter_1.pth', '--cfg-options', *toy_ade20k_options,
            *SCHEDULE, 'train_cfg.max_iters=2', E8), 'CheckpointMismatchError',
        'the checkpoint has 4 experts per MoE FFN, the model 8',
        '--allow-partial-load')
    assert 'resumed epoch' not in proc.output
    assert 'exp_avg' not in proc.output and 'size of tensor' not in proc.output


# --------------------------------------------------------- mismatches
def test_test_tool_refuses_other_expert_count_unless_allowed(
        e4_run, toy_ade20k_options, tmp_path):
    _, source = e4_run
    args = [
        'tools/test.py', TOY, source / 'iter_1.pth', '--work-dir', tmp_path,
        '--cfg-options', *toy_ade20k_options, E8
    ]
    proc = failed(
        run(*args), 'CheckpointMismatchError',
        'the checkpoint has 4 experts per MoE FFN, the model 8')
    assert 'aAcc:' not in proc.output
    proc = ok(run(*args, '--allow-partial-load'))
    assert 'Loading it partially because partial loads are allowed' in \
        proc.output
    assert 'aAcc:' in proc.output


def test_load_from_other_moe_blocks_is_refused(e4_run, toy_ade20k_options,
                                               tmp_path):
    _, source = e4_run
    failed(
        run('tools/train.py', TOY, '--work-dir', tmp_path, '--cfg-options',
            *toy_ade20k_options, *SCHEDULE, 'train_cfg.max_iters=1', E4,
            f'load_from={source}/iter_1.pth',
            'model.backbone.moe_blocks=[[],[],[0,1],[1]]'),
        'CheckpointMismatchError', 'other moe_blocks',
        'only in the model: stages.2.blocks.0.ffn')


# ------------------------------------------------------ hostile files
def test_test_tool_refuses_a_hostile_url(hub, toy_ade20k_options, tmp_path):
    env, marker = hub
    proc = failed(
        run('tools/test.py',
            TOY,
            EVIL_URL,
            '--work-dir',
            tmp_path,
            '--cfg-options',
            *toy_ade20k_options,
            env=env), 'CheckpointGlobalRefused', EVIL_URL,
        'GLOBAL posix.system')
    assert 'aAcc:' not in proc.output
    assert not marker.exists()


def test_load_from_refuses_a_hostile_url(hub, toy_ade20k_options, tmp_path):
    env, marker = hub
    failed(
        run('tools/train.py',
            TOY,
            '--work-dir',
            tmp_path,
            '--cfg-options',
            *toy_ade20k_options,
            *SCHEDULE,
            'train_cfg.max_iters=1',
            f'load_from={EVIL_URL}',
            env=env), 'CheckpointGlobalRefused', EVIL_URL,
        'GLOBAL posix.system')
    assert not marker.exists()


def test_init_cfg_refuses_a_hostile_url(hub, toy_ade20k_options, tmp_path):
    env, marker = hub
    failed(
        run('tools/train.py',
            TOY,
            '--work-dir',
            tmp_path,
            '--cfg-options',
            *toy_ade20k_options,
            *SCHEDULE,
            'train_cfg.max_iters=1',
            'model.backbone.init_cfg.type=Pretrained',
            f'model.backbone.init_cfg.checkpoint={EVIL_URL}',
            env=env), 'CheckpointGlobalRefused', EVIL_URL,
        'GLOBAL posix.system')
    assert not marker.exists()


def test_resume_refuses_a_crafted_numpy_dtype(toy_ade20k_options, tmp_path):
    """Used to segfault (exit 139) when mmengine deep-copied the hub."""
    evil = tmp_path / 'iter_1.pth'
    PAYLOADS['dtype with the refcount flag on float64'][0](str(evil),
                                                           str(tmp_path /
                                                               'marker'))
    failed(
        run('tools/train.py', TOY, '--work-dir', tmp_path / 'run', '--resume',
            evil, '--cfg-options', *toy_ade20k_options,
            *SCHEDULE, 'train_cfg.max_iters=2'), 'CheckpointGlobalRefused',
        str(evil), 'numpy.dtype')


def test_converter_refuses_a_hostile_url(hub, tmp_path):
    env, marker = hub
    failed(
        run('tools/model_converters/dense_to_rmoe.py',
            EVIL_URL,
            tmp_path / 'out.pth',
            '--config',
            TOY,
            env=env), 'CheckpointGlobalRefused', EVIL_URL,
        'GLOBAL posix.system')
    assert not marker.exists() and not (tmp_path / 'out.pth').exists()
