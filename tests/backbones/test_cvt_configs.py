"""The CvT configs: the full ones build, the toy ones train on toy data."""
import math

import pytest
import torch
from mmengine.config import Config

from rmoe_mm.backbones import CvT, RMoECvT
from rmoe_mm.moe import RMoEFFN
from rmoe_mm.testing import (CONFIG_DIR, build_model, head_channels,
                             one_step_runner)

FULL = {
    'cvt13_upernet_ade20k.py': CvT,
    'rmoe_cvt13_upernet_ade20k.py': RMoECvT,
    'cvt13_mask_rcnn_coco.py': CvT,
    'rmoe_cvt13_mask_rcnn_coco.py': RMoECvT,
}
TOY_ADE20K = ['cvt_upernet_toy_ade20k.py', 'rmoe_cvt_upernet_toy_ade20k.py']
TOY_COCO = ['cvt_mask_rcnn_toy_coco.py', 'rmoe_cvt_mask_rcnn_toy_coco.py']


@pytest.mark.parametrize('name', sorted(FULL))
def test_full_config_builds_cvt13_that_fits_its_neck(name):
    cfg = Config.fromfile(CONFIG_DIR / name)
    model = build_model(cfg)
    backbone = model.backbone
    assert type(backbone) is FULL[name]
    assert backbone.depths == [1, 2, 10]
    assert backbone.out_channels == head_channels(model) == [64, 192, 384, 384]
    if FULL[name] is RMoECvT:
        moe = [[
            i for i, b in enumerate(s.blocks) if isinstance(b.ffn, RMoEFFN)
        ] for s in backbone.stages]
        assert moe == [[], [1], [1, 3, 5, 7, 9]]
        assert backbone.stages[2].blocks[1].ffn.num_experts == 8


@pytest.mark.parametrize('name', TOY_ADE20K)
def test_toy_upernet_config_trains_a_step_on_toy_ade20k(
        name, toy_ade20k_root, tmp_path):
    runner = one_step_runner(f'toy/{name}', toy_ade20k_root, tmp_path)
    before = runner.model.backbone.stages[2].blocks[1].ffn.layers[1] \
        .weight.detach().clone()
    runner.train()
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert math.isfinite(loss)
    after = runner.model.backbone.stages[2].blocks[1].ffn.layers[1].weight
    assert not torch.equal(before, after)


@pytest.mark.parametrize('name', TOY_COCO)
def test_toy_mask_rcnn_config_trains_a_step_on_toy_coco(
        name, toy_coco_root, tmp_path):
    runner = one_step_runner(f'toy/{name}', toy_coco_root, tmp_path)
    runner.train()
    assert math.isfinite(runner.message_hub.get_scalar('train/loss').current())
    assert 'train/loss_mask' in runner.message_hub.log_scalars
