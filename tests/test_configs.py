"""Every config in configs/ builds its model; the RMoE Swin toy configs train.

Pretrained checkpoints are not needed: building a model does not load them
(that happens in ``init_weights``), and the train-step tests use the toy
configs, which start from scratch.
"""
import math

import pytest
import torch
from mmengine.config import Config

from rmoe_mm.backbones import RMoESwinTransformer
from rmoe_mm.moe import RMoEFFN
from rmoe_mm.testing import (CONFIG_DIR, build_model, head_channels,
                             one_step_runner)

CONFIGS = sorted(
    p.relative_to(CONFIG_DIR).as_posix() for p in CONFIG_DIR.rglob('*.py')
    if '_base_' not in p.parts and 'specs' not in p.parts)

# Full-size RMoE Swin configs: (embed_dims, depths, window) of the backbone
# and the neck / decode-head input channels it must feed.
RMOE_SWIN = {
    'rmoe_swin_t_upernet_ade20k.py': (96, [2, 2, 6, 2], 7),
    'rmoe_swin_s_upernet_ade20k.py': (96, [2, 2, 18, 2], 7),
    'rmoe_swin_b_upernet_ade20k.py': (128, [2, 2, 18, 2], 12),
    'rmoe_swin_l_upernet_ade20k.py': (192, [2, 2, 18, 2], 12),
    'rmoe_swin_t_mask_rcnn_coco.py': (96, [2, 2, 6, 2], 7),
    'rmoe_swin_s_mask_rcnn_coco.py': (96, [2, 2, 18, 2], 7),
    'rmoe_swin_l_mask_rcnn_coco.py': (192, [2, 2, 18, 2], 7),
    'examples/swap_backbone_mmseg.py': (96, [2, 2, 6, 2], 7),
    'examples/swap_backbone_mmdet.py': (96, [2, 2, 6, 2], 7),
}


def test_config_list_covers_the_swin_configs():
    assert set(RMOE_SWIN) <= set(CONFIGS)
    assert {
        'toy/rmoe_swin_upernet_toy_ade20k.py',
        'toy/rmoe_swin_mask_rcnn_toy_coco.py'
    } <= set(CONFIGS)


@pytest.mark.parametrize('name', CONFIGS)
def test_config_builds_its_model(name):
    cfg = Config.fromfile(CONFIG_DIR / name)
    model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) > 0
    if name not in RMOE_SWIN:
        return
    embed_dims, depths, window = RMOE_SWIN[name]
    if not name.startswith('examples/'):  # those keep the dense checkpoint
        assert cfg.model.backbone.init_cfg.checkpoint.startswith(
            'checkpoints/swin_'), 'pretrained weights come from local files'
    backbone = model.backbone
    assert type(backbone) is RMoESwinTransformer
    assert backbone.num_features == [embed_dims * 2**i for i in range(4)]
    assert [len(stage.blocks) for stage in backbone.stages] == depths
    assert backbone.stages[0].blocks[0].attn.window_size == window
    assert head_channels(model)[-1] == backbone.num_features[-1]
    moe = [[
        i for i, b in enumerate(stage.blocks) if isinstance(b.ffn, RMoEFFN)
    ] for stage in backbone.stages]
    assert moe == [[], [], list(range(1, depths[2], 2)), [1]]
    assert backbone.stages[3].blocks[1].ffn.num_experts == 8
    del model


@pytest.mark.parametrize('name,data', [
    ('rmoe_swin_upernet_toy_ade20k.py', 'toy_ade20k_root'),
    ('rmoe_swin_mask_rcnn_toy_coco.py', 'toy_coco_root'),
])
def test_rmoe_swin_toy_config_trains_a_step(name, data, request, tmp_path):
    runner = one_step_runner(f'toy/{name}', request.getfixturevalue(data),
                             tmp_path)
    ffn = runner.model.backbone.stages[2].blocks[1].ffn
    assert isinstance(ffn, RMoEFFN)
    before = {n: p.detach().clone() for n, p in ffn.named_parameters()}
    runner.train()
    assert math.isfinite(runner.message_hub.get_scalar('train/loss').current())
    changed = {
        n
        for n, p in ffn.named_parameters() if not torch.equal(p, before[n])
    }
    # core, residuals and router all take the step (the router through its
    # gate value and the injected balance-loss gradient)
    assert {'layers.0.0.weight', 'residual.fc1.weight',
            'router.gate.weight'} <= changed
