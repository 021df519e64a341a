"""CvT checkpoint layouts map onto exactly the parameters of the CvT backbone.

Official keys come from ``cvt_reference.OfficialCvT`` (the official module
names); transformers keys from the official -> transformers table of
transformers' own conversion script, transcribed in ``cvt_reference``.
"""
import pytest
import torch
from cvt_reference import OfficialCvT, official_to_transformers

from rmoe_mm.backbones.cvt import CvT
from rmoe_mm.converters.common import CheckpointLayoutError
from rmoe_mm.converters.cvt import (convert_cvt_state_dict, detect_cvt_layout,
                                    official_cvt_to_mm, transformers_cvt_to_mm)

ARCH = dict(embed_dims=(16, 32, 48), depths=(1, 2, 3), num_heads=(1, 2, 3))
CLASSIFIER = {'head.weight', 'head.bias', 'norm.weight', 'norm.bias'}


@pytest.fixture(scope='module')
def official_state_dict():
    return OfficialCvT(ARCH['embed_dims'], ARCH['depths'],
                       ARCH['num_heads']).state_dict()


@pytest.fixture(scope='module')
def model_keys():
    model = CvT(arch=ARCH, out_norm=False, extra_level=None)
    return set(model.state_dict())


@pytest.mark.parametrize(
    'official,ours',
    [
        ('stage0.patch_embed.proj.weight', 'stages.0.patch_embed.proj.weight'),
        ('stage1.patch_embed.norm.bias', 'stages.1.patch_embed.norm.bias'),
        ('stage2.cls_token', 'stages.2.cls_token'),
        ('stage2.blocks.1.attn.conv_proj_q.conv.weight',
         'stages.2.blocks.1.attn.conv_proj_q.conv.weight'),
        ('stage2.blocks.1.attn.conv_proj_v.bn.running_var',
         'stages.2.blocks.1.attn.conv_proj_v.bn.running_var'),
        ('stage1.blocks.0.attn.proj_k.bias',
         'stages.1.blocks.0.attn.proj_k.bias'),
        ('stage1.blocks.0.attn.proj.weight',
         'stages.1.blocks.0.attn.proj.weight'),
        ('stage0.blocks.0.norm2.weight', 'stages.0.blocks.0.norm2.weight'),
        ('stage2.blocks.2.mlp.fc1.weight',
         'stages.2.blocks.2.ffn.layers.0.0.weight'),
        ('stage2.blocks.2.mlp.fc2.bias',
         'stages.2.blocks.2.ffn.layers.1.bias'),
        ('head.weight', 'head.weight'),  # passes through, ignored on load
    ])
def test_official_key_renaming(official, ours):
    assert list(official_cvt_to_mm({official: None})) == [ours]


@pytest.mark.parametrize(
    'transformers,ours',
    [
        ('cvt.encoder.stages.0.embedding.convolution_embeddings.'
         'projection.weight', 'stages.0.patch_embed.proj.weight'),
        ('encoder.stages.1.embedding.convolution_embeddings.'
         'normalization.bias', 'stages.1.patch_embed.norm.bias'),
        ('cvt.encoder.stages.2.cls_token', 'stages.2.cls_token'),
        ('cvt.encoder.stages.2.layers.3.attention.attention.'
         'convolution_projection_key.convolution_projection.'
         'convolution.weight',
         'stages.2.blocks.3.attn.conv_proj_k.conv.weight'),
        ('cvt.encoder.stages.2.layers.3.attention.attention.'
         'convolution_projection_value.convolution_projection.normalization.'
         'num_batches_tracked',
         'stages.2.blocks.3.attn.conv_proj_v.bn.num_batches_tracked'),
        ('cvt.encoder.stages.1.layers.0.attention.attention.'
         'projection_query.weight', 'stages.1.blocks.0.attn.proj_q.weight'),
        ('cvt.encoder.stages.1.layers.0.attention.output.dense.bias',
         'stages.1.blocks.0.attn.proj.bias'),
        ('cvt.encoder.stages.1.layers.0.intermediate.dense.weight',
         'stages.1.blocks.0.ffn.layers.0.0.weight'),
        ('cvt.encoder.stages.1.layers.0.output.dense.weight',
         'stages.1.blocks.0.ffn.layers.1.weight'),
        ('cvt.encoder.stages.0.layers.0.layernorm_before.weight',
         'stages.0.blocks.0.norm1.weight'),
        ('cvt.encoder.stages.0.layers.0.layernorm_after.bias',
         'stages.0.blocks.0.norm2.bias'),
        ('classifier.weight', 'classifier.weight'),  # ignored on load
    ])
def test_transformers_key_renaming(transformers, ours):
    assert list(transformers_cvt_to_mm({transformers: None})) == [ours]


def test_official_checkpoint_covers_every_backbone_tensor(
        official_state_dict, model_keys):
    converted, layout = convert_cvt_state_dict(official_state_dict)
    assert layout == 'official'
    assert set(converted) == model_keys | CLASSIFIER


@pytest.mark.parametrize('prefix', ['cvt.', ''])
def test_transformers_checkpoint_covers_every_backbone_tensor(
        official_state_dict, model_keys, prefix):
    converted, layout = convert_cvt_state_dict(
        official_to_transformers(official_state_dict, prefix=prefix))
    assert layout == 'transformers'
    assert set(converted) == model_keys | {
        'layernorm.weight', 'layernorm.bias', 'classifier.weight',
        'classifier.bias'
    }


def test_own_layout_is_kept_as_is(model_keys):
    state_dict = {key: None for key in model_keys}
    converted, layout = convert_cvt_state_dict(state_dict)
    assert layout == 'mm' and list(converted) == list(state_dict)


def test_swin_checkpoint_is_not_taken_for_cvt():
    with pytest.raises(CheckpointLayoutError, match='CvT checkpoint layout'):
        detect_cvt_layout({
            'layers.0.blocks.0.mlp.fc1.weight': None,
            'patch_embed.proj.weight': None
        })


@pytest.mark.parametrize('arch', ['13', '21', 'w24'])
def test_official_preset_checkpoints_fit_the_presets_key_for_key(arch):
    """Names and shapes of a full-size official checkpoint (built on the meta
    device, so no memory is spent) match the preset's parameters exactly."""
    preset = CvT.arch_zoo[arch]
    with torch.device('meta'):
        official = OfficialCvT(
            preset['embed_dims'],
            preset['depths'],
            preset['num_heads'],
            num_classes=1000)
        model = CvT(arch=arch, out_norm=False, extra_level=None)
    converted, _ = convert_cvt_state_dict(official.state_dict())
    expected = {k: v.shape for k, v in model.state_dict().items()}
    assert {
        k: v.shape
        for k, v in converted.items() if k not in CLASSIFIER
    } == expected
