"""The tools' shared steps: reading a config has no side effect, the
distributed set-up is its own step, the version is written once."""
import re

import pytest
import torch
import torch.distributed as dist

import rmoe_mm
from rmoe_mm.engine import load_config, setup_distributed
from rmoe_mm.testing import REPO_ROOT

CONFIG = str(REPO_ROOT / 'configs' / 'toy' / 'swin_upernet_toy_ade20k.py')


def test_load_config_merges_options_and_resolves_the_work_dir_only():
    cfg = load_config(CONFIG, {'train_cfg.max_iters': 3}, None)
    assert cfg.train_cfg.max_iters == 3
    assert cfg.work_dir == './work_dirs/swin_upernet_toy_ade20k'
    assert 'launcher' not in cfg
    assert not (dist.is_available() and dist.is_initialized())
    assert load_config(CONFIG, None, 'elsewhere').work_dir == 'elsewhere'


def test_setup_distributed_without_a_launcher_sets_the_launcher_only():
    cfg = load_config(CONFIG, None, None)
    setup_distributed(cfg, 'none')
    assert cfg.launcher == 'none' and 'model_wrapper_cfg' not in cfg
    assert not (dist.is_available() and dist.is_initialized())


@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU path')
def test_setup_distributed_without_cuda_names_the_launcher_that_works():
    cfg = load_config(CONFIG, None, None)
    with pytest.raises(RuntimeError, match='--launcher pytorch'):
        setup_distributed(cfg, 'slurm')


def test_version_is_written_once():
    setup_py = (REPO_ROOT / 'setup.py').read_text()
    assert not re.search(r"version\s*=\s*['\"]", setup_py)
    assert re.fullmatch(r'\d+\.\d+\.\d+', rmoe_mm.__version__)
