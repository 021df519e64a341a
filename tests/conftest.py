"""Shared pytest fixtures: toy datasets generated once per session."""
import importlib.util
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Small enough to write in well under a second, large enough for mmdet's
# min_size=32 filter and for Swin's 4 px patches.
TOY_NUM_TRAIN = 8
TOY_NUM_VAL = 4
TOY_SIZE = 64
TOY_SEED = 0


def load_toy_data_tool():
    """Import tools/misc/make_toy_data.py by path (tools/ is no package)."""
    path = REPO_ROOT / 'tools' / 'misc' / 'make_toy_data.py'
    spec = importlib.util.spec_from_file_location('make_toy_data', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='session')
def toy_data_tool():
    """The tools/misc/make_toy_data.py module."""
    return load_toy_data_tool()


@pytest.fixture(scope='session')
def toy_ade20k_root(tmp_path_factory, toy_data_tool):
    """data_root of a toy ADE20K (8 train / 4 val images of 64 px)."""
    return toy_data_tool.make_toy_ade20k(
        tmp_path_factory.mktemp('toy_data'), num_train=TOY_NUM_TRAIN,
        num_val=TOY_NUM_VAL, size=TOY_SIZE, seed=TOY_SEED)


@pytest.fixture(scope='session')
def toy_coco_root(tmp_path_factory, toy_data_tool):
    """data_root of a toy COCO (8 train / 4 val images of 64 px)."""
    return toy_data_tool.make_toy_coco(
        tmp_path_factory.mktemp('toy_data'), num_train=TOY_NUM_TRAIN,
        num_val=TOY_NUM_VAL, size=TOY_SIZE, seed=TOY_SEED)


def _data_root_options(root):
    return [f'{split}_dataloader.dataset.data_root={root}'
            for split in ('train', 'val', 'test')]


@pytest.fixture(scope='session')
def toy_ade20k_options(toy_ade20k_root):
    """``--cfg-options`` pointing a toy ADE20K config at the session's data."""
    return _data_root_options(toy_ade20k_root)


@pytest.fixture(scope='session')
def toy_coco_options(toy_coco_root):
    """``--cfg-options`` pointing a toy COCO config at the session's data."""
    ann = Path(toy_coco_root) / 'annotations' / 'instances_val2017.json'
    return _data_root_options(toy_coco_root) + [
        f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}']


def run_tool(*args, timeout=600, env=None):
    """Run ``python tools/...`` (or a shell script) from the repo root; fail
    with its output if it exits non-zero."""
    import os
    import subprocess
    import sys
    cmd = [sys.executable, *map(str, args)] if str(args[0]).endswith('.py') \
        else ['bash', *map(str, args)]
    full_env = dict(os.environ, PYTHON=sys.executable, **(env or {}))
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout, env=full_env)
    if proc.returncode != 0:
        raise AssertionError(
            f'{" ".join(cmd)} exited {proc.returncode}\n--- stdout ---\n'
            f'{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}')
    return proc
