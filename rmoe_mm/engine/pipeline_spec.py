"""Pipeline specs: which training runs make up each pipeline of a task.

A spec is an mmengine config file (``configs/pipelines/specs/``) with

- ``stages``: name -> ``dict(config=PATH, init_from=STAGE or None,
  shared=False, options={})``. A stage is one training run of ``config``
  (``tools/train.py``); ``init_from`` names the stage whose last checkpoint
  initialises it (every ``init_cfg.checkpoint`` of its model is pointed
  there); ``shared`` stages run once for all seeds (the pretrained models a
  reproduction starts from, as the paper's official checkpoints); ``options``
  are ``--cfg-options`` for that run; ``cost`` holds what the cost tool needs
  and the config does not say (``world_size``: GPUs, default 1;
  ``dataset_size``: images per epoch, for epoch-based schedules).
- ``pipelines``: name -> the stage it ends with; its other stages follow
  from ``init_from``.
- optional ``metrics`` (the keys to report, e.g. ``['mIoU']``) and ``data``
  (toy datasets to generate: ``dict(dataset=..., preset=...)``).

``tools/analysis/compare_pipelines.py`` runs the stages; the cost tool
(``tools/analysis/pipeline_cost.py``) prices them.
"""
from typing import Dict, List, Optional

from mmengine.config import Config

STAGE_KEYS = {'config', 'init_from', 'shared', 'options', 'cost'}


class PipelineSpec:
    """A loaded spec, checked: every stage has a config, every ``init_from``
    and every pipeline names a stage, and no chain loops.

    Args:
        path (str): The spec file.
        cfg_options (dict, optional): Overrides merged into the spec (as
            ``--cfg-options`` into a config), e.g.
            ``{'stages.dense.options.train_cfg.max_iters': 10}``.
    """

    def __init__(self, path: str, cfg_options: Optional[dict] = None):
        self.path = str(path)
        cfg = Config.fromfile(self.path)
        if cfg_options:
            cfg.merge_from_dict(cfg_options)
        self.cfg = cfg
        self.stages: Dict[str, dict] = {}
        for name, stage in cfg.get('stages', {}).items():
            stage = dict(stage)
            unknown = set(stage) - STAGE_KEYS
            if unknown:
                raise ValueError(f'{self.path}: stage {name!r} has unknown '
                                 f'keys {sorted(unknown)}; allowed: '
                                 f'{sorted(STAGE_KEYS)}')
            if 'config' not in stage:
                raise ValueError(f'{self.path}: stage {name!r} has no config')
            stage.setdefault('init_from', None)
            stage.setdefault('shared', False)
            stage['options'] = dict(stage.get('options') or {})
            stage['cost'] = dict(stage.get('cost') or {})
            self.stages[name] = stage
        for name, stage in self.stages.items():
            if stage['init_from'] is not None and \
                    stage['init_from'] not in self.stages:
                raise ValueError(f'{self.path}: stage {name!r} starts from '
                                 f'unknown stage {stage["init_from"]!r}')
        self.pipelines: Dict[str, str] = dict(cfg.get('pipelines', {}))
        for name, last in self.pipelines.items():
            if last not in self.stages:
                raise ValueError(f'{self.path}: pipeline {name!r} ends with '
                                 f'unknown stage {last!r}; stages: '
                                 f'{", ".join(self.stages)}')
            self.chain(name)  # raises on a loop
        self.metrics: List[str] = list(cfg.get('metrics', []))
        self.data: List[dict] = [dict(d) for d in cfg.get('data', [])]

    def chain(self, pipeline: str) -> List[str]:
        """The stages of ``pipeline``, first to last."""
        if pipeline not in self.pipelines:
            raise ValueError(f'unknown pipeline {pipeline!r}; {self.path} '
                             f'has {", ".join(self.pipelines)}')
        stages = [self.pipelines[pipeline]]
        while self.stages[stages[-1]]['init_from'] is not None:
            stages.append(self.stages[stages[-1]]['init_from'])
            if len(stages) > len(self.stages):
                raise ValueError(f'{self.path}: the stages of pipeline '
                                 f'{pipeline!r} start from each other in a '
                                 f'loop: {stages}')
        return stages[::-1]


def pretrained_checkpoint_keys(model_cfg, prefix: str = 'model') -> List[str]:
    """Dotted keys of every ``init_cfg.checkpoint`` in a model config.

    A stage that starts from another stage's checkpoint gets every one of
    them pointed at that checkpoint (a classifier's backbone and head, a
    segmentor's backbone).
    """
    keys = []
    if isinstance(model_cfg, dict):
        for key, value in model_cfg.items():
            path = f'{prefix}.{key}'
            if key == 'init_cfg':
                inits = value if isinstance(value, (list, tuple)) else [value]
                for i, init in enumerate(inits):
                    if isinstance(init, dict) and 'checkpoint' in init:
                        keys.append(f'{path}.{i}.checkpoint' if isinstance(
                            value, (list, tuple)) else f'{path}.checkpoint')
            else:
                keys += pretrained_checkpoint_keys(value, path)
    elif isinstance(model_cfg, (list, tuple)):
        for i, value in enumerate(model_cfg):
            keys += pretrained_checkpoint_keys(value, f'{prefix}.{i}')
    return keys
