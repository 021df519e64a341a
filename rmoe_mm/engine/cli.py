"""What ``tools/train.py`` and ``tools/test.py`` share after parsing
arguments: read the config, set up distribution, build the runner, run.

Each is its own explicit step in the tools, so reading a config never starts
a process group.
"""
import os.path as osp
from typing import Callable, Optional

from mmengine.config import Config
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from .distributed import destroy_distributed


def load_config(config: str, cfg_options: Optional[dict],
                work_dir: Optional[str]) -> Config:
    """The config with ``--cfg-options`` merged and its work_dir resolved as
    mmseg/mmdet do: the command line > the config >
    ``./work_dirs/<config name>``. No side effect."""
    cfg = Config.fromfile(config)
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config))[0])
    return cfg


def build_runner(cfg: Config) -> Runner:
    """mmengine's default Runner, or the registered one ``cfg.runner_type``
    names."""
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    return RUNNERS.build(cfg)


def run_then_destroy(step: Callable):
    """``step()``, then the process group torn down (see
    :func:`destroy_distributed`)."""
    try:
        result = step()
    except BaseException:
        destroy_distributed(wait_for_peers=False)
        raise
    destroy_distributed()
    return result
