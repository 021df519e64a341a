"""The official Swin window rule (``official_window_rule``) of RMoE Swin.

Reference: ``swin_reference.OfficialSwin``, transcribed from the official
microsoft/Swin-Transformer classifier, loaded from its own official-layout
state dict into an mmpretrain ``ImageClassifier`` with an RMoE Swin backbone
(zero residuals). Narrow widths with the official geometry (patch 4; 224 px
with window 7, 384 px with window 12) keep each test near a second.
Tolerance: 1e-5 absolute on the logits, float32.
"""
import pytest
import torch
from mmengine.registry import init_default_scope
from swin_reference import OfficialSwin, randomise_

import rmoe_mm  # noqa: F401  registers the backbones and PretrainedHead
from rmoe_mm.backbones import RMoESwinTransformer
from rmoe_mm.backbones.swin_window_rule import stage_resolutions

ATOL = 1e-5
NARROW = dict(embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))
NUM_CLASSES = 10


def official_checkpoint(tmp_path, img_size, window):
    ref = OfficialSwin(
        img_size=img_size,
        embed_dim=NARROW['embed_dims'],
        depths=NARROW['depths'],
        num_heads=NARROW['num_heads'],
        window_size=window,
        num_classes=NUM_CLASSES)
    ref = randomise_(ref).eval()
    path = tmp_path / f'swin_w{window}_{img_size}.pth'
    torch.save(dict(model=ref.state_dict()), path)  # the release layout
    return path, ref


def rmoe_classifier(checkpoint, img_size, window, rule):
    """ImageClassifier(RMoE Swin, GAP, linear head) from ``checkpoint``."""
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    model = MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=dict(
                type='RMoESwinTransformer',
                pretrain_img_size=img_size,
                window_size=window,
                out_indices=(3, ),
                drop_path_rate=0.,
                official_window_rule=rule,
                moe_cfg=dict(residual_std=0.),
                init_cfg=dict(
                    type='Pretrained',
                    checkpoint=str(checkpoint),
                    final_norm=True),
                **NARROW),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(
                type='LinearClsHead',
                num_classes=NUM_CLASSES,
                in_channels=NARROW['embed_dims'] * 8,
                init_cfg=dict(
                    type='PretrainedHead', checkpoint=str(checkpoint)))))
    model.init_weights()
    return model.eval()


def logits(model, ref, img_size):
    image = torch.randn(
        2, 3, img_size, img_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(image, mode='tensor'), ref(image)


@pytest.mark.parametrize('img_size,window', [(224, 7), (384, 12)])
def test_rule_gives_the_official_logits(tmp_path, img_size, window):
    """Stage 4 is window x window: the official model does not shift it."""
    path, ref = official_checkpoint(tmp_path, img_size, window)
    model = rmoe_classifier(path, img_size, window, rule=True)
    ours, official = logits(model, ref, img_size)
    torch.testing.assert_close(ours, official, rtol=0, atol=ATOL)
    assert [(c['stage'], c['block'], c['shift_off'])
            for c in model.backbone.window_rule_changes] == [(3, 0, False),
                                                             (3, 1, True)]


def test_without_the_rule_stage_4_shifts_and_the_logits_differ(tmp_path):
    """mmseg's Swin (the default) shifts stage 4 with a mask: not the
    official model, by far more than float noise."""
    path, ref = official_checkpoint(tmp_path, 224, 7)
    model = rmoe_classifier(path, 224, 7, rule=False)
    ours, official = logits(model, ref, 224)
    assert model.backbone.window_rule_changes == []
    assert model.backbone.stages[3].blocks[1].attn.shift_size == 3
    assert (ours - official).abs().max() > 1e-3


def test_rule_shrinks_a_window_larger_than_the_map(tmp_path):
    """128 px with window 8: stage 3 is 8 x 8 (no shift) and stage 4 is
    4 x 4, so its window becomes 4 with a (2 * 4 - 1)^2-row bias table, as
    in the official model."""
    path, ref = official_checkpoint(tmp_path, 128, 8)
    model = rmoe_classifier(path, 128, 8, rule=True)
    assert [
        (c['stage'], c['window']) for c in model.backbone.window_rule_changes
    ] == [(2, (8, 8))] * 2 + [(3, (8, 4))] * 2
    attn = model.backbone.stages[3].blocks[1].attn
    assert (attn.window_size, attn.shift_size) == (4, 0)
    assert attn.w_msa.relative_position_bias_table.shape[0] == 7**2
    ours, official = logits(model, ref, 128)
    torch.testing.assert_close(ours, official, rtol=0, atol=ATOL)


def test_rule_is_off_by_default_and_dense_prediction_keeps_mmseg_swin():
    model = RMoESwinTransformer(pretrain_img_size=224, **NARROW)
    assert model.window_rule_changes == []
    assert [b.attn.shift_size for s in model.stages for b in s.blocks] == \
        [0, 3] * 4


def test_stage_resolutions_round_up_as_mmseg_pads():
    assert stage_resolutions(224, (4, 2, 2, 2)) == [(56, 56), (28, 28),
                                                    (14, 14), (7, 7)]
    assert stage_resolutions((100, 60), (4, 2, 2, 2))[-1] == (4, 2)
