"""RMoESwinTransformer: mmseg's / mmdet's Swin network, MoE where asked.

Tiny Swins (16 channels, window 3, 2 blocks per stage) keep every test well
under a second; inputs are chosen so that every stage pads to the window.
"""
import inspect

import pytest
import torch
import torch.nn.functional as F
from mmdet.models.backbones.swin import SwinTransformer as MMDetSwin
from mmengine.hub import get_config
from mmseg.models.backbones import swin as mmseg_swin
from mmseg.models.backbones.swin import SwinTransformer as MMSegSwin

from rmoe_mm.backbones import RMoESwinTransformer
from rmoe_mm.backbones.loading import CheckpointMismatchError
from rmoe_mm.moe import RMoEFFN
from rmoe_mm.registry import MODELS

TINY = dict(
    embed_dims=16,
    depths=(2, 2, 2, 2),
    num_heads=(1, 2, 2, 4),
    window_size=3,
    pretrain_img_size=48,
    drop_path_rate=0.)
# 50x70 px -> 13x18 patches -> 7x9 -> 4x5 -> 2x3: no stage is a multiple of
# the window, so every block takes the padding path.
ODD_INPUT = (2, 3, 50, 70)
ZERO_RESIDUAL = dict(
    num_experts=4, top_k=1, residual_std=0., alignment='stopgrad')


def randomise(model, seed=0):
    """Non-trivial weights everywhere (the init leaves tables at zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
    return model


def moe_layout(backbone):
    return [[
        i for i, block in enumerate(stage.blocks)
        if isinstance(block.ffn, RMoEFFN)
    ] for stage in backbone.stages]


def load_dense(rmoe, dense):
    """Dense weights into the RMoE model; only MoE tensors may be missing."""
    result = rmoe.load_state_dict(dense.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert all('.residual.' in k or '.router.' in k
               for k in result.missing_keys)
    return rmoe


def test_is_registered_once_for_both_scopes():
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmseg.registry import MODELS as MMSEG_MODELS
    assert MMSEG_MODELS.get('RMoESwinTransformer') is RMoESwinTransformer
    assert MMDET_MODELS.get('RMoESwinTransformer') is RMoESwinTransformer
    assert MODELS.get('RMoESwinTransformer') is RMoESwinTransformer


@pytest.mark.parametrize(
    'dense_cls', [MMSegSwin, MMDetSwin], ids=['mmseg', 'mmdet'])
@pytest.mark.parametrize('mode', ['eval', 'train'])
def test_zero_residual_top1_stopgrad_equals_dense_swin(dense_cls, mode):
    # Tolerance 1e-5 absolute, fp32. In train mode the router is noisy, which
    # must not matter: with zero residuals every expert is the dense FFN.
    torch.manual_seed(0)
    dense = randomise(dense_cls(**TINY))
    rmoe = load_dense(
        RMoESwinTransformer(**TINY, moe_blocks='all', moe_cfg=ZERO_RESIDUAL),
        dense)
    dense.train(mode == 'train')
    rmoe.train(mode == 'train')
    x = torch.randn(ODD_INPUT)
    with torch.no_grad():
        expected, got = dense(x), rmoe(x)
    assert len(got) == len(expected) == 4
    for out_rmoe, out_dense in zip(got, expected):
        assert out_rmoe.shape == out_dense.shape
        torch.testing.assert_close(out_rmoe, out_dense, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    'dense_cls', [MMSegSwin, MMDetSwin], ids=['mmseg', 'mmdet'])
def test_takes_every_dense_swin_argument_with_its_default(dense_cls):
    # Sizes default to None and resolve to Swin-T, i.e. the dense defaults.
    ours = inspect.signature(RMoESwinTransformer).parameters
    resolved = {
        'embed_dims': 96,
        'depths': (2, 2, 6, 2),
        'num_heads': (3, 6, 12, 24),
        'window_size': 7,
        'pretrain_img_size': 224
    }
    for name, param in inspect.signature(dense_cls).parameters.items():
        assert name in ours, name
        default = ours[name].default
        if default is None and name in resolved:
            default = resolved[name]
        assert default == param.default, name


def test_default_placement_is_odd_blocks_of_last_two_stages_8_experts_top1():
    backbone = RMoESwinTransformer(**dict(TINY, depths=(2, 2, 6, 2)))
    assert moe_layout(backbone) == [[], [], [1, 3, 5], [1]]
    ffn = backbone.stages[2].blocks[1].ffn
    assert (ffn.num_experts, ffn.top_k) == (8, 1)


def test_moe_blocks_take_per_stage_lists_with_negative_indices():
    backbone = RMoESwinTransformer(**TINY, moe_blocks=[[0], [], [-1], [0, -1]])
    assert moe_layout(backbone) == [[0], [], [1], [0, 1]]
    assert backbone.moe_blocks == [[0], [], [1], [0, 1]]


def test_moe_cfg_reaches_every_rmoe_ffn_and_keeps_block_settings():
    backbone = RMoESwinTransformer(
        **dict(TINY, drop_path_rate=0.3),
        moe_cfg=dict(num_experts=2, top_k=2, residual_rank=2))
    dense = MMSegSwin(**dict(TINY, drop_path_rate=0.3))
    for stage, dense_stage in zip(backbone.stages, dense.stages):
        for block, dense_block in zip(stage.blocks, dense_stage.blocks):
            if isinstance(block.ffn, RMoEFFN):
                assert (block.ffn.num_experts, block.ffn.top_k) == (2, 2)
                assert block.ffn.residual.rank == 2
                assert block.ffn.dropout_layer.drop_prob == \
                    dense_block.ffn.dropout_layer.drop_prob
                assert isinstance(block.ffn.layers[0][1],
                                  type(dense_block.ffn.layers[0][1]))


def test_unknown_moe_setting_is_an_error_that_names_it():
    with pytest.raises(ValueError, match='num_expert'):
        RMoESwinTransformer(**TINY, moe_cfg=dict(num_expert=4))


# mmseg's ADE20K configs are the reference for Swin's sizes (it has no
# window-12 Swin-T/S, whose presets differ from tiny/small by the window only).
MMSEG_SWIN_CONFIGS = {
    'tiny': 'swin-tiny-patch4-window7-in1k-pre',
    'small': 'swin-small-patch4-window7-in1k-pre',
    'base': 'swin-base-patch4-window7-in22k-pre',
    'large': 'swin-large-patch4-window7-in22k-pre',
    'base-w12': 'swin-base-patch4-window12-in22k-384x384-pre',
    'large-w12': 'swin-large-patch4-window12-in22k-384x384-pre',
}


@pytest.mark.parametrize('arch', sorted(MMSEG_SWIN_CONFIGS))
def test_arch_presets_match_mmseg_swin_configs(arch):
    ref = get_config(f'mmseg::swin/{MMSEG_SWIN_CONFIGS[arch]}_upernet_'
                     '8xb2-160k_ade20k-512x512.py').model.backbone
    preset = RMoESwinTransformer.arch_zoo[arch]
    assert preset['embed_dims'] == ref.embed_dims
    assert list(preset['depths']) == list(ref.depths)
    assert list(preset['num_heads']) == list(ref.num_heads)
    assert preset['window_size'] == ref.window_size
    assert preset['pretrain_img_size'] == ref.pretrain_img_size


def test_window_presets_change_only_window_and_pretrain_size():
    for size in ('tiny', 'small', 'base', 'large'):
        zoo = RMoESwinTransformer.arch_zoo
        assert zoo[f'{size}-w7'] == zoo[size]
        assert zoo[f'{size}-w12'] == dict(
            zoo[size], window_size=12, pretrain_img_size=384)


def test_arch_fills_unset_sizes_and_rejects_contradicting_ones():
    backbone = RMoESwinTransformer(
        arch='tiny-w12', use_abs_pos_embed=True, moe_blocks='none')
    assert backbone.num_features == [96, 192, 384, 768]
    assert [len(s.blocks) for s in backbone.stages] == [2, 2, 6, 2]
    assert backbone.stages[0].blocks[0].attn.w_msa.window_size == (12, 12)
    assert backbone.absolute_pos_embed.shape == (1, 96 * 96, 96)  # 384 px
    with pytest.raises(ValueError, match="arch='large' sets embed_dims=192"):
        RMoESwinTransformer(arch='large', embed_dims=96)
    with pytest.raises(ValueError, match='unknown Swin arch'):
        RMoESwinTransformer(arch='huge')


def test_without_arch_the_defaults_are_mmseg_swin_t():
    ours = RMoESwinTransformer(moe_blocks='none')
    ref = MMSegSwin()
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in ref.state_dict().items()}


def test_with_cp_checkpoints_every_block_and_keeps_outputs_and_grads(
        monkeypatch):
    # Reference: the same model without checkpointing; tolerance 1e-6.
    calls = []
    real = mmseg_swin.cp.checkpoint

    def counting(fn, *args, **kwargs):
        calls.append(fn)
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(mmseg_swin.cp, 'checkpoint', counting)
    torch.manual_seed(0)
    model = randomise(
        RMoESwinTransformer(
            **TINY, moe_blocks='all', moe_cfg=dict(num_experts=4)))
    model.train()
    x = torch.randn(ODD_INPUT)

    def outputs_and_grads(with_cp):
        for stage in model.stages:
            for block in stage.blocks:
                block.with_cp = with_cp
        model.zero_grad()
        torch.manual_seed(1)  # same router noise in both runs
        outs = model(x)
        sum(o.square().sum() for o in outs).backward()
        return ([o.detach() for o in outs], {
            n: p.grad.clone()
            for n, p in model.named_parameters() if p.grad is not None
        })

    plain_outs, plain_grads = outputs_and_grads(False)
    assert calls == []
    cp_outs, cp_grads = outputs_and_grads(True)
    assert len(calls) == sum(TINY['depths'])
    for a, b in zip(cp_outs, plain_outs):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert cp_grads.keys() == plain_grads.keys()
    assert any('.router.' in k for k in cp_grads)
    for name in plain_grads:
        torch.testing.assert_close(
            cp_grads[name], plain_grads[name], rtol=1e-5, atol=1e-6, msg=name)


def test_frozen_stages_freeze_as_dense_swin_plus_their_moe_tensors():
    dense = MMSegSwin(**TINY, frozen_stages=2)
    rmoe = RMoESwinTransformer(**TINY, frozen_stages=2, moe_blocks='all')
    dense.train()
    rmoe.train()
    dense_frozen = {
        n
        for n, p in dense.named_parameters() if not p.requires_grad
    }
    rmoe_frozen = {
        n
        for n, p in rmoe.named_parameters() if not p.requires_grad
    }
    moe_frozen = {
        n
        for n in rmoe_frozen if '.residual.' in n or '.router.' in n
    }
    assert rmoe_frozen - moe_frozen == dense_frozen
    assert moe_frozen == {
        n
        for n, _ in rmoe.named_parameters()
        if n.startswith(('stages.0.', 'stages.1.')) and (
            '.residual.' in n or '.router.' in n)
    }
    assert not rmoe.stages[1].blocks[0].ffn.router.training
    assert rmoe.stages[2].blocks[0].ffn.router.training


def test_from_scratch_init_draws_cores_as_mmseg_and_keeps_residual_noise():
    torch.manual_seed(0)
    rmoe = RMoESwinTransformer(**TINY, moe_cfg=dict(residual_std=1e-3))
    residual = rmoe.stages[2].blocks[1].ffn.residual.fc1.weight.detach().clone(
    )
    rmoe.init_weights()
    ffn = rmoe.stages[2].blocks[1].ffn
    assert torch.equal(ffn.residual.fc1.weight, residual)
    # mmseg's from-scratch init: trunc-normal std 0.02, zero bias (std within
    # 25% for these 64x16 weights).
    assert abs(ffn.layers[0][0].weight.std().item() - 0.02) < 0.005
    assert torch.equal(ffn.layers[0][0].bias,
                       torch.zeros_like(ffn.layers[0][0].bias))


# ---------------------------------------------------------------- loading
def save(obj, path):
    torch.save(obj, path)
    return str(path)


def test_dense_init_puts_dense_ffn_in_core_and_new_routers(tmp_path):
    torch.manual_seed(0)
    dense = randomise(MMSegSwin(**TINY))
    path = save({'state_dict': dense.state_dict()}, tmp_path / 'dense.pth')
    rmoe = RMoESwinTransformer(
        **TINY,
        moe_cfg=dict(num_experts=4),
        init_cfg=dict(type='Pretrained', checkpoint=path))
    router_before = rmoe.stages[3].blocks[1].ffn.router.gate.weight.clone()
    rmoe.init_weights()
    ffn, dense_ffn = rmoe.stages[3].blocks[1].ffn, dense.stages[3].blocks[
        1].ffn
    assert torch.equal(ffn.layers[0][0].weight, dense_ffn.layers[0][0].weight)
    assert torch.equal(ffn.layers[1].bias, dense_ffn.layers[1].bias)
    assert torch.equal(ffn.router.gate.weight, router_before)


def test_load_report_lists_loaded_initialised_and_ignored(tmp_path):
    dense = MMSegSwin(**TINY)
    state = {'backbone.' + k: v for k, v in dense.state_dict().items()}
    state['decode_head.conv_seg.weight'] = torch.zeros(3, 3)
    path = save({'state_dict': state, 'meta': {}}, tmp_path / 'segmentor.pth')
    rmoe = RMoESwinTransformer(**TINY, moe_cfg=dict(num_experts=4))
    report = rmoe.load_pretrained(path)
    moe_keys = {
        k
        for k in rmoe.state_dict() if '.residual.' in k or '.router.' in k
    }
    assert set(report.initialised) == moe_keys
    assert report.ignored == ['decode_head.conv_seg.weight']
    assert report.missing == []
    assert len(
        report.loaded) == len(dense.state_dict()) - len(report.recomputed)


def test_rmoe_checkpoint_round_trips_exactly(tmp_path):
    torch.manual_seed(0)
    source = randomise(
        RMoESwinTransformer(**TINY, moe_cfg=dict(num_experts=4)))
    path = save({'state_dict': source.state_dict()}, tmp_path / 'rmoe.pth')
    target = RMoESwinTransformer(**TINY, moe_cfg=dict(num_experts=4))
    report = target.load_pretrained(path)
    assert report.initialised == [] and report.missing == []
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_rmoe_checkpoint_with_other_expert_count_is_refused(tmp_path):
    source = RMoESwinTransformer(**TINY, moe_cfg=dict(num_experts=4))
    path = save(source.state_dict(), tmp_path / 'rmoe_e4.pth')
    target = RMoESwinTransformer(**TINY, moe_cfg=dict(num_experts=8))
    with pytest.raises(
            CheckpointMismatchError,
            match=r'num_experts=8.*another expert count'):
        target.load_pretrained(path)


def test_rmoe_checkpoint_with_other_moe_blocks_is_refused(tmp_path):
    source = RMoESwinTransformer(**TINY, moe_cfg=dict(num_experts=4))
    path = save(source.state_dict(), tmp_path / 'rmoe.pth')
    target = RMoESwinTransformer(
        **TINY, moe_blocks=[[], [], [0, 1], [1]], moe_cfg=dict(num_experts=4))
    with pytest.raises(
            CheckpointMismatchError,
            match=r"only in the model: \['stages.2.blocks.0.ffn'\]"):
        target.load_pretrained(path)


def test_wrong_shape_is_an_error_naming_key_and_shapes(tmp_path):
    state = MMSegSwin(**TINY).state_dict()
    path = save(state, tmp_path / 'dense.pth')
    target = RMoESwinTransformer(**dict(TINY, embed_dims=32))
    with pytest.raises(
            CheckpointMismatchError,
            match=r"'patch_embed.projection.weight' has shape "
            r"\(16, 3, 4, 4\) but the model's has shape "
            r"\(32, 3, 4, 4\)"):
        target.load_pretrained(path)


def test_other_window_resizes_bias_tables_as_mmseg_does(tmp_path):
    # Reference: mmseg's own init_weights loading the same window-3 file into
    # a window-5 Swin (bicubic resize of every relative position table).
    torch.manual_seed(0)
    state = randomise(MMSegSwin(**TINY)).state_dict()
    state = {
        k: v
        for k, v in state.items() if not k.endswith('relative_position_index')
    }
    path = save(state, tmp_path / 'w3.pth')
    window5 = dict(TINY, window_size=5)
    ref = MMSegSwin(
        **window5, init_cfg=dict(type='Pretrained', checkpoint=path))
    ref.init_weights()
    ours = RMoESwinTransformer(
        **window5,
        moe_blocks='all',
        moe_cfg=ZERO_RESIDUAL,
        init_cfg=dict(type='Pretrained', checkpoint=path))
    ours.init_weights()
    table = 'stages.1.blocks.1.attn.w_msa.relative_position_bias_table'
    assert ours.state_dict()[table].shape == (81, 2)
    # timm's resize_rel_pos_bias_table_simple gives mmseg's numbers.
    torch.testing.assert_close(
        ours.state_dict()[table], ref.state_dict()[table], rtol=0, atol=1e-6)
    ours.eval()
    ref.eval()
    x = torch.randn(ODD_INPUT)
    with torch.no_grad():
        for a, b in zip(ours(x), ref(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_other_grid_resizes_absolute_position_embedding_bicubic(tmp_path):
    # Reference: the embedding as a C-channel image, resized by a plain
    # bicubic F.interpolate (mmseg itself refuses to load a mismatch).
    torch.manual_seed(0)
    small = dict(TINY, use_abs_pos_embed=True, pretrain_img_size=48)
    state = randomise(MMSegSwin(**small)).state_dict()
    path = save(state, tmp_path / 'p48.pth')
    ours = RMoESwinTransformer(
        **dict(small, pretrain_img_size=64),
        moe_blocks='none',
        init_cfg=dict(type='Pretrained', checkpoint=path))
    ours.init_weights()
    grid = state['absolute_pos_embed'].reshape(1, 12, 12,
                                               16).permute(0, 3, 1, 2)
    expected = F.interpolate(
        grid, size=(16, 16), mode='bicubic').permute(0, 2, 3,
                                                     1).reshape(1, 256, 16)
    torch.testing.assert_close(
        ours.absolute_pos_embed.detach(), expected, rtol=0, atol=1e-6)


def test_missing_checkpoint_file_points_to_the_docs(tmp_path):
    backbone = RMoESwinTransformer(
        **TINY,
        init_cfg=dict(
            type='Pretrained', checkpoint=str(tmp_path / 'nope.pth')))
    with pytest.raises(FileNotFoundError, match='docs/swin.md'):
        backbone.init_weights()
