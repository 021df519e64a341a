"""Swin checkpoint layouts: each converter against an independent reference.

References: mmdet's own ``swin_converter`` and its ``convert_weights=True``
loading (official layout), timm's model and its ``checkpoint_filter_fn``
(timm layout), mmseg's Swin (mm layout). The state dicts are synthesised from
tiny random models with the right keys and shapes.
"""
import re
from collections import OrderedDict

import pytest
import torch
from mmdet.models.backbones.swin import SwinTransformer as MMDetSwin
from mmdet.models.backbones.swin import swin_converter
from mmengine.config import ConfigDict
from mmseg.models.backbones.swin import SwinTransformer as MMSegSwin

from rmoe_mm.backbones import RMoESwinTransformer
from rmoe_mm.converters import (CheckpointLayoutError, detect_swin_layout,
                                extract_backbone_state_dict,
                                official_swin_to_mm)
from rmoe_mm.converters.swin import timm_swin_to_official

TINY = dict(
    embed_dims=16,
    depths=(2, 2, 2, 2),
    num_heads=(1, 2, 2, 4),
    window_size=3,
    pretrain_img_size=48,
    drop_path_rate=0.)
ZERO_RESIDUAL = dict(num_experts=4, top_k=1, residual_std=0.)
INPUT = (1, 3, 50, 70)


def random_mmseg_swin(seed=0):
    gen = torch.Generator().manual_seed(seed)
    model = MMSegSwin(**TINY)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
    model.eval()  # mmseg's Swin.train() returns None, so no chaining
    return model


def mm_to_official(state_dict):
    """The official release layout of an mm* Swin state dict (test-side
    inverse of the documented mapping, incl. the patch-merging order)."""
    out = OrderedDict()
    for key, value in state_dict.items():
        if re.match(r'norm\d\.', key):
            continue  # official checkpoints have one final norm instead
        if key.startswith('stages.'):
            key = key.replace('stages.', 'layers.', 1)
            key = key.replace('.attn.w_msa.', '.attn.')
            key = key.replace('.ffn.layers.0.0.', '.mlp.fc1.')
            key = key.replace('.ffn.layers.1.', '.mlp.fc2.')
            if '.downsample.reduction.' in key:
                o, i = value.shape
                value = value.reshape(o, i // 4, 4)[:, :, [0, 2, 1, 3]] \
                    .transpose(1, 2).reshape(o, i)
            elif '.downsample.norm.' in key:
                value = value.reshape(-1, 4)[:, [0, 2, 1, 3]].t().reshape(-1)
        key = key.replace('patch_embed.projection.', 'patch_embed.proj.')
        out[key] = value
    channels = TINY['embed_dims'] * 8
    out['norm.weight'] = torch.ones(channels)
    out['norm.bias'] = torch.zeros(channels)
    out['head.weight'] = torch.zeros(10, channels)
    out['head.bias'] = torch.zeros(10)
    out['layers.0.blocks.1.attn_mask'] = torch.zeros(4, 9, 9)
    return out


def outputs(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)


def assert_all_close(got, expected, atol=1e-5):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=atol)


def rmoe_from(path, **kwargs):
    model = RMoESwinTransformer(
        **TINY,
        moe_blocks='all',
        moe_cfg=ZERO_RESIDUAL,
        init_cfg=dict(type='Pretrained', checkpoint=str(path)),
        **kwargs)
    model.init_weights()
    return model


# ----------------------------------------------------------------- layouts
def test_layouts_are_told_apart():
    mm = random_mmseg_swin().state_dict()
    official = mm_to_official(mm)
    timm_like = OrderedDict(
        (re.sub(r'^layers\.(\d)\.downsample',
                lambda m: f'layers.{int(m.group(1)) + 1}.downsample', k), v)
        for k, v in official.items())
    assert detect_swin_layout(mm) == 'mm'
    assert detect_swin_layout(official) == 'official'
    assert detect_swin_layout(timm_like) == 'timm'
    features_only = OrderedDict(
        (k.replace('layers.', 'layers_', 1), v) for k, v in timm_like.items())
    assert detect_swin_layout(features_only) == 'timm'


def test_unknown_layout_is_an_error_that_lists_what_it_saw():
    resnet = {
        'conv1.weight': torch.zeros(1),
        'layer1.0.conv1.weight': torch.zeros(1),
        'fc.weight': torch.zeros(1)
    }
    with pytest.raises(
            CheckpointLayoutError,
            match=r'3 keys, e.g. conv1.weight, layer1.0.conv1.weight'
            r'.*top-level names: conv1 \(1\), layer1 \(1\)'):
        detect_swin_layout(resnet)


def test_checkpoint_without_weights_is_an_error():
    with pytest.raises(CheckpointLayoutError, match="'state_dict', 'model'"):
        extract_backbone_state_dict({'meta': {'epoch': 3}})


@pytest.mark.parametrize('wrap', ['plain', 'state_dict', 'model', 'module'])
def test_backbone_is_found_in_every_wrapper(wrap):
    weights = {'stages.0.x': torch.ones(1)}
    whole = {
        'backbone.stages.0.x': torch.ones(1),
        'decode_head.conv_seg.weight': torch.zeros(1)
    }
    wrapped = {
        'plain': weights,
        'state_dict': {
            'state_dict': whole
        },
        'model': {
            'model': weights
        },
        'module': {
            'state_dict': {
                'module.' + k: v
                for k, v in whole.items()
            }
        }
    }[wrap]
    state_dict, others = extract_backbone_state_dict(wrapped)
    assert list(state_dict) == ['stages.0.x']
    assert others == ([] if wrap in ('plain', 'model') else
                      ['decode_head.conv_seg.weight'])


# ---------------------------------------------------------------- official
def test_official_converter_matches_mmdet_swin_converter():
    official = mm_to_official(random_mmseg_swin().state_dict())
    ours = official_swin_to_mm(official)
    reference = {
        k[len('backbone.'):]: v
        for k, v in swin_converter(official).items()
    }
    assert set(ours) - set(reference) == {'head.weight', 'head.bias'}
    for key, value in reference.items():
        assert torch.equal(ours[key], value), key


def test_official_checkpoint_inits_like_mmdet_convert_weights(tmp_path):
    # Three-way check, tolerance 1e-5: the source mmseg model, mmdet's Swin
    # loading the official file with convert_weights=True, and ours.
    torch.manual_seed(0)
    source = random_mmseg_swin()
    path = tmp_path / 'swin_tiny_official.pth'
    torch.save({'model': mm_to_official(source.state_dict())}, path)
    mmdet = MMDetSwin(
        **TINY,
        convert_weights=True,
        init_cfg=ConfigDict(type='Pretrained', checkpoint=str(path)))
    mmdet.init_weights()
    ours = rmoe_from(path, convert_weights=True)
    x = torch.randn(INPUT)
    expected = outputs(source, x)
    # mmdet/ours leave norm0..3 at their init; give them the source's.
    for model in (mmdet, ours):
        for i in range(4):
            getattr(model, f'norm{i}').load_state_dict(
                getattr(source, f'norm{i}').state_dict())
    assert_all_close(outputs(mmdet, x), expected)
    assert_all_close(outputs(ours, x), expected)


# -------------------------------------------------------------------- mm
@pytest.mark.parametrize('whole_model', [False, True])
def test_mm_checkpoint_inits_to_the_same_outputs(tmp_path, whole_model):
    source = random_mmseg_swin()
    state = source.state_dict()
    if whole_model:  # an mmseg segmentor / mmdet detector checkpoint
        state = {'backbone.' + k: v for k, v in state.items()}
        state['neck.fpn_convs.0.conv.weight'] = torch.zeros(1)
    torch.save({'state_dict': state, 'meta': {}}, tmp_path / 'mm.pth')
    ours = rmoe_from(tmp_path / 'mm.pth')
    x = torch.randn(INPUT)
    assert_all_close(outputs(ours, x), outputs(source, x))


# ------------------------------------------------------------------- timm
def tiny_timm_swin():
    timm = pytest.importorskip('timm')
    torch.manual_seed(0)
    model = timm.create_model(
        'swin_tiny_patch4_window7_224',
        pretrained=False,
        img_size=192,
        embed_dim=16,
        depths=(2, 2, 2, 2),
        num_heads=(1, 2, 2, 4),
        window_size=3,
        num_classes=10)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
    return model.eval()


def test_timm_to_official_is_inverted_by_timm_checkpoint_filter():
    model = tiny_timm_swin()
    from timm.models.swin_transformer import checkpoint_filter_fn
    timm_state = model.state_dict()
    official = timm_swin_to_official(timm_state)
    assert 'layers.0.downsample.reduction.weight' in official
    assert 'head.weight' in official
    back = checkpoint_filter_fn(official, model)
    assert set(back) == set(timm_state)
    for key, value in timm_state.items():
        assert torch.equal(back[key], value), key


def test_timm_checkpoint_inits_to_timm_features(tmp_path):
    # Reference: timm's forward_features (final norm applied, NHWC), against
    # our last stage with norm3 = timm's final norm; tolerance 1e-4 (four
    # stages of fp32 on 0.2-std random weights).
    model = tiny_timm_swin()
    torch.save(model.state_dict(), tmp_path / 'timm.pth')
    ours = rmoe_from(tmp_path / 'timm.pth')
    ours.norm3.weight.data.copy_(model.norm.weight)
    ours.norm3.bias.data.copy_(model.norm.bias)
    x = torch.randn(2, 3, 192, 192)
    with torch.no_grad():
        expected = model.forward_features(x)
    got = outputs(ours, x)[3].permute(0, 2, 3, 1)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
