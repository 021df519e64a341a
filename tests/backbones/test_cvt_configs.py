"""The CvT configs: the full ones build, the toy ones train on toy data."""
import math
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

from rmoe_mm.backbones.cvt import CvT, RMoECvT
from rmoe_mm.moe import RMoEFFN

CONFIGS = Path(__file__).resolve().parents[2] / 'configs'

FULL = {
    'cvt13_upernet_ade20k.py': CvT,
    'rmoe_cvt13_upernet_ade20k.py': RMoECvT,
    'cvt13_mask_rcnn_coco.py': CvT,
    'rmoe_cvt13_mask_rcnn_coco.py': RMoECvT,
}
TOY_ADE20K = ['cvt_upernet_toy_ade20k.py', 'rmoe_cvt_upernet_toy_ade20k.py']
TOY_COCO = ['cvt_mask_rcnn_toy_coco.py', 'rmoe_cvt_mask_rcnn_toy_coco.py']


def build_model(cfg):
    init_default_scope(cfg.default_scope)
    if cfg.default_scope == 'mmseg':
        from mmseg.registry import MODELS
    else:
        from mmdet.registry import MODELS
    return MODELS.build(cfg.model)


def neck_channels(model):
    head = getattr(model, 'decode_head', None)
    return list(head.in_channels if head is not None else
                model.neck.in_channels)


@pytest.mark.parametrize('name', sorted(FULL))
def test_full_config_builds_cvt13_that_fits_its_neck(name):
    cfg = Config.fromfile(CONFIGS / name)
    model = build_model(cfg)
    backbone = model.backbone
    assert type(backbone) is FULL[name]
    assert backbone.depths == [1, 2, 10]
    assert backbone.out_channels == neck_channels(model) == [64, 192, 384, 384]
    if FULL[name] is RMoECvT:
        moe = [[i for i, b in enumerate(s.blocks) if isinstance(b.ffn, RMoEFFN)]
               for s in backbone.stages]
        assert moe == [[], [1], [1, 3, 5, 7, 9]]
        assert backbone.stages[2].blocks[1].ffn.num_experts == 8


def toy_runner(name, data_root, work_dir, coco=False):
    cfg = Config.fromfile(CONFIGS / 'toy' / name)
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


@pytest.mark.parametrize('name', TOY_ADE20K)
def test_toy_upernet_config_trains_a_step_on_toy_ade20k(name, toy_ade20k_root,
                                                        tmp_path):
    runner = toy_runner(name, toy_ade20k_root, tmp_path)
    before = runner.model.backbone.stages[2].blocks[1].ffn.layers[1] \
        .weight.detach().clone()
    runner.train()
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert math.isfinite(loss)
    after = runner.model.backbone.stages[2].blocks[1].ffn.layers[1].weight
    assert not torch.equal(before, after)


@pytest.mark.parametrize('name', TOY_COCO)
def test_toy_mask_rcnn_config_trains_a_step_on_toy_coco(name, toy_coco_root,
                                                        tmp_path):
    runner = toy_runner(name, toy_coco_root, tmp_path)
    runner.train()
    assert math.isfinite(runner.message_hub.get_scalar('train/loss').current())
    assert 'train/loss_mask' in runner.message_hub.log_scalars
