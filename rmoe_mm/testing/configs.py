"""Building models and one-step runners from configs/, for the config tests.
"""
from pathlib import Path

from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

#: The checkout's configs/.
CONFIG_DIR = Path(__file__).resolve().parents[2] / 'configs'


def build_model(cfg):
    """The config's model, built in its library's scope (no weights loaded)."""
    init_default_scope(cfg.default_scope)
    if cfg.default_scope == 'mmseg':
        from mmseg.registry import MODELS
    elif cfg.default_scope == 'mmpretrain':
        from mmpretrain.registry import MODELS
    else:
        from mmdet.registry import MODELS
    model = cfg.model
    if 'data_preprocessor' in cfg and isinstance(model, dict):
        model = dict(model)  # as mmengine's Runner merges it
        model.setdefault('data_preprocessor', cfg.data_preprocessor)
    return MODELS.build(model)


def head_channels(model):
    """The input channels of the decode head (mmseg) or the neck (mmdet)."""
    head = getattr(model, 'decode_head', None)
    return list(
        head.in_channels if head is not None else model.neck.in_channels)


def one_step_runner(config, data_root, work_dir):
    """A Runner that trains ``config`` (relative to configs/) for one
    iteration of batch 2 on ``data_root``, without validation or
    checkpoints."""
    cfg = Config.fromfile(CONFIG_DIR / config)
    cfg.work_dir = str(work_dir)
    cfg.train_dataloader.dataset.data_root = str(data_root)
    cfg.train_dataloader.batch_size = 2
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=1)
    for part in ('val', 'test'):
        cfg[f'{part}_dataloader'] = cfg[f'{part}_cfg'] = None
        cfg[f'{part}_evaluator'] = None
    cfg.default_hooks.checkpoint = None
    cfg.log_level = 'WARNING'
    return Runner.from_cfg(cfg)
