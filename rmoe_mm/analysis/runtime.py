"""A trained model and its data, from a config and a checkpoint, for the
analysis tools (no Runner: no work dir, no logger files, no hooks)."""
import itertools
from typing import Iterable, List, Optional

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.registry import init_default_scope
from mmengine.runner import Runner, set_random_seed
from mmengine.runner.checkpoint import CheckpointLoader
from torch import nn

from rmoe_mm.checkpoint.fit import (check_model_state_dict, checked_load,
                                    enforce_fits)
from rmoe_mm.moe import is_moe_key, rmoe_layers
from rmoe_mm.moe.experts import remap_legacy_residual_keys


def load_analysis_config(config: str,
                         cfg_options: Optional[dict] = None) -> Config:
    """The config with ``cfg_options`` merged, its default scope set."""
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope')
    if scope not in ('mmseg', 'mmdet'):
        raise ValueError(f"{config}: default_scope must be 'mmseg' or "
                         f"'mmdet', got {scope!r}")
    init_default_scope(scope)
    return cfg


def _build(cfg: Config) -> nn.Module:
    if cfg.default_scope == 'mmseg':
        from mmseg.registry import MODELS
    else:
        from mmdet.registry import MODELS
    return MODELS.build(cfg.model)


def _model_state_dict(checkpoint: str) -> dict:
    """The model weights of an mmengine checkpoint.

    ``CheckpointLoader`` runs rmoe_mm's safe loader for every scheme
    (``rmoe_mm.checkpoint``, installed when rmoe_mm is imported).
    """
    ckpt = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f'{checkpoint} holds no state dict')
    return {
        (k[len('module.'):] if k.startswith('module.') else k): v
        for k, v in state.items()
    }


def load_model(cfg: Config,
               checkpoint: str,
               device='cpu',
               dense_twin_for_dense_checkpoint: bool = True) -> nn.Module:
    """The config's whole model with every weight from ``checkpoint``.

    Activation checkpointing (``with_cp``) is switched off. The load is
    strict, as ``tools/test.py``'s: a checkpoint that does not fit the
    config raises ``CheckpointMismatchError`` (a ``ValueError``) naming the
    keys, unless partial loads are allowed (``RMOE_MM_ALLOW_PARTIAL_LOAD=1``,
    then a WARNING). Residual keys of the older layout are renamed. A dense
    checkpoint (no residual or router keys) with an RMoE config is loaded
    into the config's dense twin (``moe_blocks='none'``) when
    ``dense_twin_for_dense_checkpoint`` is set, and refused otherwise.

    Returns:
        The model in eval mode on ``device``.
    """
    state_dict = remap_legacy_residual_keys(_model_state_dict(checkpoint))
    if cfg.model.get('backbone', {}).get('with_cp', False):
        # Recomputed forwards would show the hooks every block twice; the
        # analysis keeps no optimizer state, so memory is rarely the limit.
        cfg = cfg.copy()
        cfg.model.backbone.with_cp = False
        print_log(
            'analysis runs without activation checkpointing '
            '(with_cp=False)',
            logger='current')
    model = _build(cfg)
    has_moe = any(True for _ in rmoe_layers(model))
    ckpt_moe = any(is_moe_key(k) for k in state_dict)
    if has_moe and not ckpt_moe:
        if not dense_twin_for_dense_checkpoint:
            raise ValueError(
                f'{checkpoint} is a dense checkpoint (no residual or router '
                'weights) but this analysis needs an RMoE model: pass an '
                'RMoE checkpoint (e.g. trained with an RMoE config)')
        print_log(
            f'{checkpoint} is dense: analysing the dense twin of the '
            "config's backbone (moe_blocks='none')",
            logger='current')
        cfg = cfg.copy()
        cfg.model.backbone.moe_blocks = 'none'
        model = _build(cfg)
    elif ckpt_moe and not has_moe:
        raise ValueError(f'{checkpoint} is an RMoE checkpoint but the config '
                         'builds a dense model; pass the RMoE config it was '
                         'trained with')
    # The checks of tools/test.py (rmoe_mm.checkpoint.fit, mode 'test'):
    # every tensor must fit; RMOE_MM_ALLOW_PARTIAL_LOAD=1 makes it a WARNING.
    enforce_fits(check_model_state_dict(model, state_dict, mode='test'))
    with checked_load():  # checked above; the backbone's hook skips it
        model.load_state_dict(state_dict, strict=False)
    return model.to(device).eval()


def build_dataloader(cfg: Config,
                     split: str = 'train',
                     seed: int = 0,
                     batch_size: Optional[int] = None):
    """The config's ``{split}_dataloader`` as mmengine's Runner builds it."""
    key = f'{split}_dataloader'
    if cfg.get(key) is None:
        raise ValueError(f'the config has no {key}')
    loader_cfg = cfg[key].copy()
    if batch_size is not None:
        loader_cfg.batch_size = batch_size
    return Runner.build_dataloader(loader_cfg, seed=seed)


def seeded_batches(cfg: Config,
                   num: int,
                   seed: int,
                   split: str = 'train',
                   batch_size: Optional[int] = None) -> List:
    """The first ``num`` batches of the config's ``split`` loader, the same
    in every invocation: the sampler and the data augmentations (random
    resize, crop, flip draw from the global generators) are seeded."""
    set_random_seed(seed)
    return take(build_dataloader(cfg, split, seed, batch_size), num)


def take(loader: Iterable, num: int) -> List:
    """The first ``num`` batches of ``loader``."""
    batches = list(itertools.islice(loader, num))
    if len(batches) < num:
        raise ValueError(f'the data loader gave {len(batches)} batches, '
                         f'{num} were asked for')
    return batches


def default_device() -> str:
    return 'cuda' if torch.cuda.is_available() else 'cpu'
