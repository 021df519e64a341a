"""RMoE backbones in mmpretrain's ImageClassifier and its checkpoint loading.

References: mmpretrain's own dense ``SwinTransformer`` classifier (an
independent implementation that follows the official window rule), and the
official-architecture CvT of ``tests/backbones/cvt_reference.py`` (its
classifier reads the last stage's cls token). Tolerance: 1e-5 absolute on the
logits, float32. Narrow models keep every test well under a second.
"""
import sys
from pathlib import Path

import pytest
import torch
from mmengine.registry import init_default_scope

import rmoe_mm  # noqa: F401  registers the backbones and PretrainedHead
from rmoe_mm.classification import (PretrainedHead, find_classifier_head,
                                    move_final_norm)

sys.path.insert(0, str(Path(__file__).parent / 'backbones'))
from cvt_reference import OfficialCvT, randomise_  # noqa: E402

ATOL = 1e-5
SWIN = dict(embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))
CVT = dict(embed_dims=(16, 32, 48), depths=(1, 2, 4), num_heads=(1, 2, 3))


def build(cfg):
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    model = MODELS.build(cfg)
    model.init_weights()
    return model.eval()


def swin_classifier(backbone, num_classes=10, head_init=None):
    return dict(
        type='ImageClassifier',
        backbone=backbone,
        neck=dict(type='GlobalAveragePooling'),
        head=dict(
            type='LinearClsHead',
            num_classes=num_classes,
            in_channels=256,
            init_cfg=head_init))


def rmoe_swin(checkpoint=None, **kwargs):
    init = None if checkpoint is None else dict(
        type='Pretrained', checkpoint=str(checkpoint), final_norm=True)
    backbone = dict(
        type='RMoESwinTransformer',
        pretrain_img_size=128,
        window_size=4,
        out_indices=(3, ),
        drop_path_rate=0.,
        official_window_rule=True,
        moe_cfg=dict(residual_std=0.),
        init_cfg=init,
        **SWIN)
    return dict(backbone, **kwargs)


@pytest.fixture(scope='module')
def image():
    """128 px: stage 4 of a window-4 Swin is 4 x 4, not shifted by the
    official rule (mmpretrain's Swin refuses maps smaller than the window)."""
    return torch.randn(
        2, 3, 128, 128, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope='module')
def dense_classifier(tmp_path_factory):
    """mmpretrain's dense Swin classifier (random weights) and its checkpoint
    file as mmengine saves it (backbone.*, head.fc.*)."""
    dense = build(
        swin_classifier(
            dict(
                type='SwinTransformer',
                arch=dict(SWIN),
                img_size=128,
                window_size=4,
                drop_path_rate=0.),
            head_init=dict(type='Normal', layer='Linear', std=0.5)))
    with torch.no_grad():  # no unit norms or zero tables to hide a skipped key
        for name, param in dense.named_parameters():
            param.add_(0.05 * torch.randn_like(param))
    path = tmp_path_factory.mktemp('dense') / 'dense_cls.pth'
    torch.save(dict(state_dict=dense.state_dict(), meta=dict()), path)
    return dense, path


def test_zero_residual_rmoe_classifier_equals_the_dense_classifier(
        dense_classifier, image):
    dense, path = dense_classifier
    model = build(
        swin_classifier(
            rmoe_swin(path),
            head_init=dict(type='PretrainedHead', checkpoint=str(path))))
    assert len(model.backbone.moe_blocks[3]) == 1  # MoE FFNs in the model
    with torch.no_grad():
        torch.testing.assert_close(
            model(image, mode='tensor'),
            dense(image, mode='tensor'),
            rtol=0,
            atol=ATOL)


def test_rmoe_cvt_classifier_equals_the_official_cvt_classifier(tmp_path):
    ref = randomise_(
        OfficialCvT(
            CVT['embed_dims'], CVT['depths'], CVT['num_heads'],
            num_classes=10)).eval()
    path = tmp_path / 'cvt_official.pth'
    torch.save(dict(model=ref.state_dict()), path)
    model = build(
        dict(
            type='ImageClassifier',
            backbone=dict(
                type='RMoECvT',
                arch=CVT,
                out_indices=(2, ),
                extra_level=None,
                out_type='cls_token',
                drop_path_rate=0.,
                moe_cfg=dict(residual_std=0.),
                init_cfg=dict(
                    type='Pretrained', checkpoint=str(path), final_norm=True)),
            head=dict(
                type='LinearClsHead',
                num_classes=10,
                in_channels=48,
                init_cfg=dict(type='PretrainedHead', checkpoint=str(path)))))
    image = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            model(image, mode='tensor'), ref.logits(image), rtol=0, atol=ATOL)


def test_head_of_another_class_count_keeps_its_init_and_says_so(
        dense_classifier):
    _, path = dense_classifier
    init = PretrainedHead(checkpoint=str(path))
    head = torch.nn.Linear(256, 7)
    before = head.weight.detach().clone()
    init(head)
    assert torch.equal(head.weight, before)
    assert 'not loaded' in init.result and '10 classes' in init.result


def test_checkpoint_without_a_classifier_is_an_error(tmp_path):
    path = tmp_path / 'backbone_only.pth'
    torch.save({'patch_embed.projection.weight': torch.zeros(1)}, path)
    with pytest.raises(KeyError, match='no classification head'):
        PretrainedHead(checkpoint=str(path))(torch.nn.Linear(2, 2))
    lenient = PretrainedHead(checkpoint=str(path), required=False)
    lenient(torch.nn.Linear(2, 2))
    assert 'keeps its initialisation' in lenient.result


def test_head_and_final_norm_layouts():
    weight, bias = torch.zeros(3, 4), torch.zeros(3)
    for keys, layout in ((('head.weight', 'head.bias'), 'official'),
                         (('head.fc.weight', 'head.fc.bias'), 'mmpretrain'),
                         (('classifier.weight', 'classifier.bias'),
                          'transformers')):
        found = find_classifier_head(dict(zip(keys, (weight, bias))))
        assert found[0] == layout and found[1] is weight
    moved = move_final_norm(
        {
            'norm.weight': 1,
            'layernorm.bias': 2,
            'stages.0.norm1.weight': 3
        }, 'norm3')
    assert moved == {
        'norm3.weight': 1,
        'norm3.bias': 2,
        'stages.0.norm1.weight': 3
    }
    mm_layout = {'norm3.weight': 1, 'head.fc.weight': 2}
    assert move_final_norm(mm_layout, 'norm3') == mm_layout


def test_final_norm_needs_the_last_stage_in_out_indices(dense_classifier):
    _, path = dense_classifier
    with pytest.raises(ValueError, match='put the last stage in out_indices'):
        build(swin_classifier(rmoe_swin(path, out_indices=(2, ))))
