"""tools/model_converters/dense_to_rmoe.py: dense checkpoint in, RMoE out."""
import importlib.util
from pathlib import Path

import pytest
import torch
from mmseg.models.backbones.swin import SwinTransformer as MMSegSwin

from rmoe_mm.backbones import RMoESwinTransformer
from rmoe_mm.backbones.loading import CheckpointMismatchError
from rmoe_mm.testing import run_tool

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / 'tools' / 'model_converters' / 'dense_to_rmoe.py'
TINY = dict(
    embed_dims=16,
    depths=[2, 2, 2, 2],
    num_heads=[1, 2, 2, 4],
    window_size=3,
    pretrain_img_size=48,
    drop_path_rate=0.)


def load_tool():
    spec = importlib.util.spec_from_file_location('dense_to_rmoe', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def dense_file(tmp_path):
    """A dense mmseg Swin checkpoint with random weights, and its model."""
    gen = torch.Generator().manual_seed(0)
    model = MMSegSwin(**TINY)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
    path = tmp_path / 'dense.pth'
    torch.save({'state_dict': model.state_dict()}, path)
    return path, model


def test_backbone_cfg_is_read_from_json_literal_or_dict_call():
    tool = load_tool()
    expected = {
        'type': 'RMoESwinTransformer',
        'moe_cfg': {
            'num_experts': 4
        },
        'depths': [2, 2]
    }
    for text in ('{"type": "RMoESwinTransformer", "moe_cfg": '
                 '{"num_experts": 4}, "depths": [2, 2]}',
                 "{'type': 'RMoESwinTransformer', 'moe_cfg': "
                 "{'num_experts': 4}, 'depths': [2, 2]}",
                 "dict(type='RMoESwinTransformer', "
                 "moe_cfg=dict(num_experts=4), depths=[2, 2])"):
        assert tool.parse_backbone_cfg(text) == expected
    with pytest.raises(ValueError, match='must be a dict with a "type"'):
        tool.parse_backbone_cfg('[1, 2]')


def test_output_reloads_exactly_and_keeps_the_dense_function(
        dense_file, tmp_path):
    # Zero residuals: the converted backbone computes the dense one (1e-5).
    src, dense = dense_file
    cfg = dict(
        type='RMoESwinTransformer',
        **TINY,
        moe_cfg=dict(num_experts=4, residual_std=0.))
    out = load_tool().convert(str(src), str(tmp_path / 'rmoe.pth'), cfg)
    assert out['meta']['backbone_cfg'] == cfg
    assert any('.router.' in k for k in out['state_dict'])

    reloaded = RMoESwinTransformer(
        **TINY,
        moe_cfg=dict(num_experts=4, residual_std=0.),
        init_cfg=dict(
            type='Pretrained', checkpoint=str(tmp_path / 'rmoe.pth')))
    reloaded.init_weights()
    for key, value in out['state_dict'].items():
        assert torch.equal(reloaded.state_dict()[key], value), key
    x = torch.randn(1, 3, 50, 70)
    reloaded.eval()
    dense.eval()
    with torch.no_grad():
        for a, b in zip(reloaded(x), dense(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_output_is_refused_by_a_backbone_with_other_experts(
        dense_file, tmp_path):
    src, _ = dense_file
    dst = tmp_path / 'rmoe_e4.pth'
    load_tool().convert(
        str(src), str(dst),
        dict(type='RMoESwinTransformer', **TINY, moe_cfg=dict(num_experts=4)))
    other = RMoESwinTransformer(**TINY, moe_cfg=dict(num_experts=2))
    with pytest.raises(CheckpointMismatchError, match='num_experts=2'):
        other.load_pretrained(str(dst))


def test_non_rmoe_backbone_type_is_an_error(dense_file, tmp_path):
    src, _ = dense_file
    with pytest.raises(KeyError, match="'SwinTransformer' is not in the root"):
        load_tool().convert(
            str(src), str(tmp_path / 'x.pth'),
            dict(type='SwinTransformer', **TINY))


@pytest.mark.slow
def test_command_line_converts_with_a_config(tmp_path):
    # The toy config's backbone (32 channels, window 4) and a matching dense
    # checkpoint; the saved keys carry --out-prefix.
    toy = dict(
        embed_dims=32,
        depths=[2, 2, 2, 2],
        num_heads=[1, 2, 4, 8],
        window_size=4,
        pretrain_img_size=128)
    src = tmp_path / 'dense_toy.pth'
    torch.save(MMSegSwin(**toy).state_dict(), src)
    dst = tmp_path / 'rmoe_toy.pth'
    run_tool(
        TOOL,
        src,
        dst,
        '--config',
        'configs/toy/rmoe_swin_upernet_toy_ade20k.py',
        '--out-prefix',
        'backbone.',
        timeout=300)
    saved = torch.load(dst, weights_only=True)
    keys = saved['state_dict']
    assert 'backbone.stages.2.blocks.1.ffn.router.gate.weight' in keys
    fc1 = keys['backbone.stages.2.blocks.1.ffn.residual.fc1.weight']
    assert fc1.shape[0] == 8
    assert saved['meta']['backbone_cfg']['type'] == 'RMoESwinTransformer'
