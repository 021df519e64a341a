"""No load into an RMoE model is silently partial, on any path.

Reference: mmengine's own loader (``mmengine.runner.load_checkpoint``, which
``load_from``, ``--resume`` and ``tools/test.py`` use, and mmseg's / mmdet's
tools with ``custom_imports=['rmoe_mm']``) skips whatever does not fit with
one WARNING. Here every mismatch stops before a tensor is copied (the model
is compared with a snapshot), with a message that names the family, the
expert count or the keys; the dense -> RMoE case loads and is reported;
``RMOE_MM_ALLOW_PARTIAL_LOAD=1`` loads what fits, with a WARNING.
"""
import logging

import pytest
import torch
from mmengine.logging import MMLogger
from mmengine.runner import load_checkpoint
from mmseg.models.backbones import SwinTransformer as MMSegSwin
from torch import nn

import rmoe_mm  # noqa: F401
from rmoe_mm.backbones import CvT, RMoECvT, RMoESwinTransformer
from rmoe_mm.checkpoint import fit as fit_module
from rmoe_mm.checkpoint.fit import CheckpointMismatchError, guard_model_loads
from rmoe_mm.converters import CheckpointLayoutError

SWIN = dict(
    embed_dims=16,
    depths=(2, 2, 2, 2),
    num_heads=(1, 2, 2, 4),
    window_size=3,
    pretrain_img_size=48,
    drop_path_rate=0.)
CVT = dict(
    arch=dict(embed_dims=(16, 32, 48), depths=(1, 2, 4), num_heads=(1, 2, 3)),
    drop_path_rate=0.)


class Segmentor(nn.Module):
    """A whole model: a backbone and a head, keys as mmseg's."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.decode_head = nn.Conv2d(4, 3, 1)


def swin(**moe):
    return RMoESwinTransformer(**SWIN, **moe)


def randomised(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen))
    return model


def save_whole(backbone, path, head=True):
    state = {f'backbone.{k}': v for k, v in backbone.state_dict().items()}
    if head:
        state.update({
            f'decode_head.{k}': v
            for k, v in nn.Conv2d(4, 3, 1).state_dict().items()
        })
    torch.save({'state_dict': state, 'meta': {}}, path)
    return str(path)


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def refused(model, path, *texts):
    """mmengine's non-strict load raises, naming ``texts``; nothing copied."""
    before = snapshot(model)
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(model, path, map_location='cpu')
    for text in texts:
        assert text in str(info.value), str(info.value)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    return str(info.value)


@pytest.fixture
def warnings_logged():
    records = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = lambda record: records.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


@pytest.fixture(autouse=True)
def strict(monkeypatch):
    monkeypatch.delenv(fit_module.ENV_ALLOW_PARTIAL, raising=False)
    monkeypatch.setattr(fit_module, '_allow_partial', False)


# ------------------------------------------- whole-model loads (mmengine)
def test_cvt_checkpoint_into_swin_names_both_families(tmp_path):
    path = save_whole(RMoECvT(**CVT), tmp_path / 'cvt.pth')
    message = refused(
        Segmentor(swin()), path, "backbone is a CvT",
        'RMoESwinTransformer (Swin)')
    assert 'moe_blocks' not in message


def test_swin_checkpoint_into_cvt_names_both_families(tmp_path):
    path = save_whole(swin(), tmp_path / 'swin.pth')
    refused(
        Segmentor(RMoECvT(**CVT)), path, 'backbone is a Swin', 'RMoECvT (CvT)')


def test_other_expert_count(tmp_path):
    path = save_whole(swin(moe_cfg=dict(num_experts=4)), tmp_path / 'e4.pth')
    refused(
        Segmentor(swin(moe_cfg=dict(num_experts=8))), path,
        'checkpoint has 4 experts per MoE FFN, the model 8',
        'tools/model_converters/dense_to_rmoe.py',
        'backbone.stages.2.blocks.1.ffn.residual')


def test_other_moe_blocks(tmp_path):
    path = save_whole(swin(), tmp_path / 'rmoe.pth')
    refused(
        Segmentor(swin(moe_blocks=[[], [], [0, 1], [1]])), path,
        'other moe_blocks', 'only in the model: stages.2.blocks.0.ffn')


def test_other_shapes(tmp_path):
    path = save_whole(MMSegSwin(**SWIN), tmp_path / 'dense.pth')
    refused(
        Segmentor(RMoESwinTransformer(**dict(SWIN, embed_dims=32))), path,
        'another shape',
        'backbone.patch_embed.projection.weight: checkpoint (16, 3, 4, 4)'
        ', model (32, 3, 4, 4)')


def test_missing_backbone_tensors(tmp_path):
    source = swin()
    state = {
        f'backbone.{k}': v
        for k, v in source.state_dict().items() if not k.startswith('norm3.')
    }
    torch.save({'state_dict': state}, tmp_path / 'cut.pth')
    refused(
        Segmentor(swin()), str(tmp_path / 'cut.pth'),
        '2 tensors of the model are not in the checkpoint',
        'backbone.norm3.weight')


def test_backbone_only_file_as_whole_model(tmp_path):
    torch.save({'state_dict': swin().state_dict()}, tmp_path / 'bb.pth')
    refused(
        Segmentor(swin()), str(tmp_path / 'bb.pth'),
        "no key of the checkpoint starts with 'backbone.'", 'init_cfg')


def test_rmoe_checkpoint_into_dense_cvt(tmp_path):
    path = save_whole(RMoECvT(**CVT), tmp_path / 'rmoe_cvt.pth')
    refused(Segmentor(CvT(**CVT)), path, "backbone CvT is dense")


def test_plain_torch_load_state_dict_is_guarded_too():
    model = swin()
    with pytest.raises(CheckpointMismatchError, match='CvT'):
        model.load_state_dict(RMoECvT(**CVT).state_dict(), strict=False)


def test_dense_into_rmoe_loads_and_is_reported(tmp_path, warnings_logged):
    dense = randomised(MMSegSwin(**SWIN))
    path = save_whole(dense, tmp_path / 'dense.pth')
    model = Segmentor(swin())
    residual = model.backbone.stages[2].blocks[1].ffn.residual.fc1.weight
    residual_before = residual.clone()
    load_checkpoint(model, path, map_location='cpu')
    torch.testing.assert_close(
        model.backbone.stages[2].blocks[1].ffn.layers[0][0].weight,
        dense.stages[2].blocks[1].ffn.layers[0][0].weight,
        rtol=0,
        atol=0)
    assert torch.equal(residual, residual_before)
    assert any('A dense checkpoint loads into' in m and '2 MoE FFNs' in m
               for m in warnings_logged), warnings_logged


def test_partial_load_option_loads_what_fits(tmp_path, monkeypatch,
                                             warnings_logged):
    source = randomised(swin(moe_cfg=dict(num_experts=4)))
    path = save_whole(source, tmp_path / 'e4.pth')
    model = Segmentor(swin(moe_cfg=dict(num_experts=8)))
    router_before = model.backbone.stages[2].blocks[1].ffn.router.gate.weight
    router_before = router_before.clone()
    monkeypatch.setenv('RMOE_MM_ALLOW_PARTIAL_LOAD', '1')
    load_checkpoint(model, path, map_location='cpu')
    assert torch.equal(model.backbone.patch_embed.projection.weight,
                       source.patch_embed.projection.weight)
    assert torch.equal(
        model.backbone.stages[2].blocks[1].ffn.router.gate.weight,
        router_before)
    assert any('Loading it partially' in m and '4 experts' in m
               for m in warnings_logged), warnings_logged


# --------------------------------------------- tools: whole-model guard
def test_test_mode_refuses_a_missing_head(tmp_path):
    path = save_whole(swin(), tmp_path / 'no_head.pth', head=False)
    model = Segmentor(swin())
    guard_model_loads(model, 'test')
    refused(model, path, 'the model Segmentor', 'decode_head.weight')


def test_test_mode_refuses_dense_into_rmoe(tmp_path):
    path = save_whole(MMSegSwin(**SWIN), tmp_path / 'dense.pth')
    model = Segmentor(swin())
    guard_model_loads(model, 'test')
    refused(
        model, path, 'the checkpoint is dense but RMoESwinTransformer is '
        'an RMoE backbone', 'its 2 MoE FFNs would keep random routers')


def test_derived_buffers_are_never_required(tmp_path):
    source = randomised(swin())
    state = {
        f'backbone.{k}': v
        for k, v in source.state_dict().items()
        if not k.endswith('relative_position_index')
    }
    state.update({
        f'decode_head.{k}': v
        for k, v in nn.Conv2d(4, 3, 1).state_dict().items()
    })
    torch.save({'state_dict': state}, tmp_path / 'no_index.pth')
    model = Segmentor(swin())
    guard_model_loads(model, 'test')
    load_checkpoint(model, str(tmp_path / 'no_index.pth'))
    assert torch.equal(model.backbone.patch_embed.projection.weight,
                       source.patch_embed.projection.weight)


def test_load_from_mode_allows_dense_but_not_extra_keys(tmp_path):
    dense = MMSegSwin(**SWIN)
    model = Segmentor(swin())
    guard_model_loads(model, 'load_from')
    load_checkpoint(model, save_whole(dense, tmp_path / 'dense.pth'))
    state = torch.load(tmp_path / 'dense.pth')['state_dict']
    state['auxiliary_head.conv_seg.weight'] = torch.zeros(3, 3, 1, 1)
    torch.save({'state_dict': state}, tmp_path / 'extra.pth')
    refused(model, str(tmp_path / 'extra.pth'),
            'auxiliary_head.conv_seg.weight')


# ------------------------------------------------------------- init_cfg
def test_init_cfg_cvt_into_swin_names_the_families(tmp_path):
    torch.save(RMoECvT(**CVT).state_dict(), tmp_path / 'cvt.pth')
    model = RMoESwinTransformer(
        **SWIN,
        init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'cvt.pth')))
    with pytest.raises(CheckpointMismatchError) as info:
        model.init_weights()
    assert "backbone is a CvT" in str(info.value)
    assert 'moe_blocks' not in str(info.value)


def test_init_cfg_swin_into_cvt_names_the_families(tmp_path):
    torch.save(MMSegSwin(**SWIN).state_dict(), tmp_path / 'swin.pth')
    model = CvT(
        **CVT,
        init_cfg=dict(
            type='Pretrained', checkpoint=str(tmp_path / 'swin.pth')))
    with pytest.raises(
            CheckpointLayoutError,
            match='this is a Swin checkpoint, not a CvT one'):
        model.init_weights()


def test_init_cfg_partial_load_option(tmp_path, monkeypatch, warnings_logged):
    source = randomised(swin(moe_cfg=dict(num_experts=4)))
    torch.save(source.state_dict(), tmp_path / 'e4.pth')
    model = swin(moe_cfg=dict(num_experts=8))
    with pytest.raises(CheckpointMismatchError, match='--allow-partial-load'):
        model.load_pretrained(str(tmp_path / 'e4.pth'))
    monkeypatch.setenv('RMOE_MM_ALLOW_PARTIAL_LOAD', '1')
    model.load_pretrained(str(tmp_path / 'e4.pth'))
    assert torch.equal(model.patch_embed.projection.weight,
                       source.patch_embed.projection.weight)
    assert any('Loading what fits' in m for m in warnings_logged)


def test_model_guard_names_a_backbone_only_file(tmp_path):
    torch.save({'state_dict': swin().state_dict()}, tmp_path / 'bb.pth')
    model = Segmentor(swin())
    guard_model_loads(model, 'load_from')
    refused(model, str(tmp_path / 'bb.pth'), 'a Swin backbone checkpoint',
            "model.backbone.init_cfg=dict(type='Pretrained'")


def test_removing_the_model_guard_keeps_the_backbone_guard(tmp_path):
    path = save_whole(RMoECvT(**CVT), tmp_path / 'cvt.pth')
    model = Segmentor(swin())
    guard_model_loads(model, 'test').remove()
    refused(model, path, 'backbone is a CvT')
