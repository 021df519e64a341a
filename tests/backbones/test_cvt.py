"""CvT and RMoE-CvT: the official architecture, checkpoints, dense outputs.

The reference is ``cvt_reference.OfficialCvT``, transcribed from the official
microsoft/CvT code with no rmoe_mm code in it. Tiny widths (16/32/48) keep
every test well under a second on a CPU. Tolerance: 1e-5 absolute in float32.
"""
import importlib.util
import inspect
from pathlib import Path

import pytest
import torch
from cvt_reference import OfficialCvT, official_to_transformers, randomise_
from mmcv.cnn.bricks.transformer import FFN

from rmoe_mm.backbones import CvT, RMoECvT
from rmoe_mm.backbones.loading import CheckpointMismatchError
from rmoe_mm.converters.cvt import convert_cvt_state_dict
from rmoe_mm.registry import MODELS

ATOL = 1e-5
TINY_ARCH = dict(
    embed_dims=(16, 32, 48), depths=(1, 2, 4), num_heads=(1, 2, 3))


def tiny_reference(seed=0):
    ref = OfficialCvT(TINY_ARCH['embed_dims'], TINY_ARCH['depths'],
                      TINY_ARCH['num_heads'])
    return randomise_(ref, seed).eval()


def backbone_weights(ref):
    """The reference's weights in CvT's layout, no classifier or final norm."""
    state_dict, layout = convert_cvt_state_dict(ref.state_dict())
    assert layout == 'official'
    return {
        k: v
        for k, v in state_dict.items() if not k.startswith(('head.', 'norm.'))
    }


def tiny_cvt(cls=CvT, **kwargs):
    kwargs.setdefault('drop_path_rate', 0.)
    return cls(arch=TINY_ARCH, **kwargs)


@pytest.fixture(scope='module')
def image():
    return torch.randn(
        2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def official_checkpoint(tmp_path):
    """An official-layout checkpoint file and the reference it came from."""
    ref = tiny_reference()
    path = tmp_path / 'CvT-tiny-official.pth'
    torch.save(ref.state_dict(), path)
    return path, ref


def assert_stages_match(model, ref, image):
    with torch.no_grad():
        expected = ref(image)
        actual = model.eval()(image)
    assert len(actual) == len(expected)
    for stage, (a, e) in enumerate(zip(actual, expected)):
        assert a.shape == e.shape, f'stage {stage}'
        torch.testing.assert_close(
            a, e, rtol=0, atol=ATOL, msg=lambda m: f'stage {stage}: {m}')


# ------------------------------------------------------------ architecture
def test_dense_cvt_matches_official_reference_stage_by_stage(image):
    ref = tiny_reference()
    model = tiny_cvt(extra_level=None, out_norm=False)
    model.load_state_dict(backbone_weights(ref), strict=True)
    assert_stages_match(model, ref, image)


def test_last_stage_cls_token_takes_part_in_attention(image):
    """Dropping the cls token changes stage-2 features: not dead weight."""
    ref = tiny_reference()
    state_dict = backbone_weights(ref)
    del state_dict['stages.2.cls_token']
    model = tiny_cvt(
        extra_level=None, out_norm=False, with_cls_token=(False, False, False))
    model.load_state_dict(state_dict, strict=True)
    with torch.no_grad():
        ours, expected = model.eval()(image), ref(image)
    torch.testing.assert_close(ours[1], expected[1], rtol=0, atol=ATOL)
    assert (ours[2] - expected[2]).abs().max() > 1e-3


def test_outputs_have_strides_4_8_16_32_and_declared_channels():
    model = tiny_cvt().eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 96))
    assert [o.shape[1] for o in outs] == model.out_channels == [16, 32, 48, 48]
    assert [tuple(o.shape[2:]) for o in outs] == [(16, 24), (8, 12), (4, 6),
                                                  (2, 3)]


def test_pool_extra_level_is_stride_2_subsampling_of_last_output():
    model = tiny_cvt(extra_level='pool').eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    torch.testing.assert_close(outs[3], outs[2][:, :, ::2, ::2])
    assert not hasattr(model, 'extra_embed')


def test_without_extra_level_index_3_is_rejected():
    with pytest.raises(ValueError, match='out_indices holds 3'):
        tiny_cvt(extra_level=None, out_indices=(0, 1, 2, 3))


@pytest.mark.parametrize('arch,millions', [('13', 20), ('21', 32),
                                           ('w24', 277)])
def test_presets_match_official_parameter_counts(arch, millions):
    """Backbone + ImageNet head (norm, 1000-way linear) = the paper's size.

    The paper (Table 2) gives millions rounded to integers: 20, 32, 277.
    """
    with torch.device('meta'):
        model = CvT(arch=arch, extra_level=None, out_norm=False)
    dim = model.embed_dims[-1]
    head = 2 * dim + dim * 1000 + 1000
    total = sum(p.numel() for p in model.parameters()) + head
    assert round(total / 1e6) == millions


def test_unknown_arch_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match="'13', '21', 'w24'"):
        CvT(arch='cvt-99')


def test_mlp_is_an_mmcv_ffn_with_quick_gelu():
    block = tiny_cvt().stages[0].blocks[0]
    assert type(block.ffn) is FFN
    x = torch.linspace(-3, 3, 7)
    act = block.ffn.layers[0][1]
    torch.testing.assert_close(act(x), x * torch.sigmoid(1.702 * x))


def test_frozen_stages_stop_gradients_and_keep_batchnorm_in_eval():
    model = tiny_cvt(frozen_stages=2)
    model.train()
    for i, stage in enumerate(model.stages):
        frozen = i < 2
        assert all(p.requires_grad != frozen for p in stage.parameters())
        bn = stage.blocks[0].attn.conv_proj_k.bn
        assert bn.training != frozen
    assert not any(p.requires_grad for p in model.norm1.parameters())
    assert all(p.requires_grad for p in model.norm2.parameters())


def test_norm_eval_keeps_every_batchnorm_in_eval_mode():
    model = tiny_cvt(norm_eval=True).train()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(bn.training for bn in bns)


def test_with_cp_gives_the_same_output_and_gradients(image):
    torch.manual_seed(0)
    plain = tiny_cvt()
    checkpointed = tiny_cvt(with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    grads = []
    for model in (plain, checkpointed):
        model.train()
        loss = sum(o.square().mean() for o in model(image))
        loss.backward()
        grads.append(model.stages[2].blocks[0].attn.proj_q.weight.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_registered_for_mmseg_and_mmdet_scopes():
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmseg.registry import MODELS as MMSEG_MODELS
    for registry in (MODELS, MMSEG_MODELS, MMDET_MODELS):
        assert registry.get('CvT') is CvT
        assert registry.get('RMoECvT') is RMoECvT


# ------------------------------------------------------------- checkpoints
def test_official_checkpoint_loads_through_init_cfg(official_checkpoint,
                                                    image):
    path, ref = official_checkpoint
    model = tiny_cvt(
        extra_level=None,
        out_norm=False,
        init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    assert_stages_match(model, ref, image)


@pytest.mark.parametrize('prefix', ['cvt.', ''])
def test_transformers_checkpoint_loads_through_init_cfg(
        tmp_path, image, prefix):
    """CvtForImageClassification (``cvt.`` prefix) and bare CvtModel."""
    ref = tiny_reference(seed=3)
    state_dict = official_to_transformers(ref.state_dict(), prefix=prefix)
    if not prefix:  # CvtModel has no classification head
        state_dict = {
            k: v
            for k, v in state_dict.items()
            if not k.startswith(('layernorm.', 'classifier.'))
        }
    path = tmp_path / 'pytorch_model.bin'
    torch.save(state_dict, path)
    model = tiny_cvt(
        extra_level=None,
        out_norm=False,
        init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    assert_stages_match(model, ref, image)


def test_cls_token_of_checkpoint_is_ignored_by_a_model_without_one(
        official_checkpoint):
    path, ref = official_checkpoint
    model = tiny_cvt(
        with_cls_token=(False, False, False),
        init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    report = model.load_pretrained(str(path))
    assert 'stages.2.cls_token' in report.ignored
    assert not hasattr(model.stages[2], 'cls_token')
    torch.testing.assert_close(model.stages[2].blocks[0].attn.proj_q.weight,
                               ref.stage2.blocks[0].attn.proj_q.weight)


def test_load_report_ignores_only_the_classifier_and_misses_only_new_layers(
        official_checkpoint):
    """Out norms and the extra level are new; ImageNet head and norm unused."""
    path, _ = official_checkpoint
    report = tiny_cvt().load_pretrained(str(path))
    assert sorted(report.ignored) == [
        'head.bias', 'head.weight', 'norm.bias', 'norm.weight'
    ]
    assert {k.split('.')[0]
            for k in report.missing
            } == {'norm0', 'norm1', 'norm2', 'extra_embed'}


def test_missing_checkpoint_file_points_to_the_docs(tmp_path):
    model = tiny_cvt(
        init_cfg=dict(
            type='Pretrained', checkpoint=str(tmp_path / 'nope.pth')))
    with pytest.raises(FileNotFoundError, match='docs/cvt.md'):
        model.init_weights()


def test_checkpoint_of_another_arch_is_rejected(official_checkpoint):
    path, _ = official_checkpoint
    model = CvT(
        arch=dict(
            embed_dims=(8, 32, 48), depths=(1, 2, 4), num_heads=(1, 2, 3)),
        init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(
            CheckpointMismatchError,
            match=r'stages\.0\.patch_embed\.proj\.weight.*shape'):
        model.init_weights()


def test_own_checkpoint_of_a_whole_segmentor_loads(tmp_path, image):
    """A ``backbone.``-prefixed state dict (mmseg/mmdet model) loads."""
    source = randomise_(tiny_cvt(), seed=7)
    state_dict = {f'backbone.{k}': v for k, v in source.state_dict().items()}
    state_dict['decode_head.conv_seg.weight'] = torch.zeros(3, 3)
    path = tmp_path / 'segmentor.pth'
    torch.save({'state_dict': state_dict, 'meta': {}}, path)
    model = tiny_cvt(init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    with torch.no_grad():
        for a, b in zip(model.eval()(image), source.eval()(image)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


# -------------------------------------------------------------------- RMoE
def _zero_residual_moe_cfg():
    return dict(num_experts=4, top_k=1, residual_std=0.)


def test_rmoe_cvt_default_moe_blocks_are_odd_blocks_of_last_two_stages():
    model = tiny_cvt(RMoECvT, moe_cfg=_zero_residual_moe_cfg())
    moe = [[type(b.ffn) is not FFN for b in s.blocks] for s in model.stages]
    assert moe == [[False], [False, True], [False, True, False, True]]


def test_rmoe_cvt_has_the_same_moe_arguments_as_rmoe_swin():
    from rmoe_mm.backbones.rmoe_swin import RMoESwinTransformer
    swin = inspect.signature(RMoESwinTransformer).parameters
    cvt = inspect.signature(RMoECvT).parameters
    for name in ('moe_blocks', 'moe_cfg'):
        assert cvt[name].default == swin[name].default


def test_zero_residual_rmoe_cvt_equals_dense_cvt(image):
    torch.manual_seed(0)
    dense = tiny_cvt()
    randomise_(dense, seed=5)
    rmoe = tiny_cvt(
        RMoECvT, moe_blocks='all', moe_cfg=_zero_residual_moe_cfg())
    missing, unexpected = rmoe.load_state_dict(
        dense.state_dict(), strict=False)
    assert not unexpected
    assert missing and all('residual' in k or 'router' in k for k in missing)
    with torch.no_grad():
        for a, b in zip(rmoe.eval()(image), dense.eval()(image)):
            torch.testing.assert_close(a, b, rtol=0, atol=ATOL)


def test_rmoe_cvt_cores_load_from_official_checkpoint(official_checkpoint,
                                                      image):
    path, ref = official_checkpoint
    model = tiny_cvt(
        RMoECvT,
        extra_level=None,
        out_norm=False,
        moe_cfg=_zero_residual_moe_cfg(),
        init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    assert_stages_match(model, ref, image)


def load_dense_to_rmoe_tool():
    """Import tools/model_converters/dense_to_rmoe.py by path (no package)."""
    path = (
        Path(__file__).resolve().parents[2] / 'tools' / 'model_converters' /
        'dense_to_rmoe.py')
    spec = importlib.util.spec_from_file_location('dense_to_rmoe', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('layout', ['official', 'transformers'])
def test_converter_tool_turns_a_dense_checkpoint_into_an_rmoe_cvt_one(
        tmp_path, image, layout):
    """dense_to_rmoe.py output loads back into RMoE-CvT and keeps the dense
    network (zero residuals) with the tool's routers."""
    ref = tiny_reference(seed=4)
    state_dict = ref.state_dict()
    if layout == 'transformers':
        state_dict = official_to_transformers(state_dict)
    src, dst = tmp_path / 'dense.pth', tmp_path / 'rmoe.pth'
    torch.save(state_dict, src)
    backbone_cfg = dict(
        type='RMoECvT',
        arch=TINY_ARCH,
        extra_level=None,
        out_norm=False,
        drop_path_rate=0.,
        moe_cfg=_zero_residual_moe_cfg())
    saved = load_dense_to_rmoe_tool().convert(
        str(src), str(dst), backbone_cfg)['state_dict']
    assert any('.ffn.router.' in key for key in saved)
    model = MODELS.build(
        dict(
            backbone_cfg,
            init_cfg=dict(type='Pretrained', checkpoint=str(dst))))
    report = model.load_pretrained(str(dst))
    assert report.layout == 'mm' and not report.initialised
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0)
    assert_stages_match(model, ref, image)
