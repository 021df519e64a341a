"""The balance loss trains the router inside an unmodified mmseg
EncoderDecoder, by the injected gradient (default) or as the opt-in
``loss_moe`` term."""
import copy

import torch
from mmengine.model import BaseModule
from mmengine.optim import OptimWrapper
from mmengine.registry import DefaultScope
from mmengine.structures import PixelData
from mmseg.models import EncoderDecoder
from mmseg.structures import SegDataSample
from moe_reference import importance_cv2

from rmoe_mm.hooks import attach_loss_moe, detach_loss_moe
from rmoe_mm.moe import RMoEFFN
from rmoe_mm.testing.registry import MODELS


@MODELS.register_module()
class TinyRMoEBackbone(BaseModule):
    """4x4 patch embedding, then one RMoE FFN on the patch tokens."""

    def __init__(self, dims=16, balance_loss_weight=0.01):
        super().__init__()
        self.patch_embed = torch.nn.Conv2d(3, dims, 4, stride=4)
        self.ffn = RMoEFFN(
            dims,
            2 * dims,
            num_experts=4,
            gate_noise=0.,
            balance_loss_weight=balance_loss_weight)

    def forward(self, x):
        x = self.patch_embed(x)
        b, c, h, w = x.shape
        tokens = self.ffn(x.flatten(2).transpose(1, 2))
        return (tokens.transpose(1, 2).reshape(b, c, h, w), )


def build_segmentor(balance_loss_weight):
    with DefaultScope.overwrite_default_scope('mmseg'):
        return EncoderDecoder(
            backbone=dict(
                type='rmoe_mm_testing.TinyRMoEBackbone',
                balance_loss_weight=balance_loss_weight),
            decode_head=dict(
                type='FCNHead',
                in_channels=16,
                channels=8,
                num_convs=1,
                num_classes=3,
                in_index=0,
                dropout_ratio=0.),
            data_preprocessor=dict(
                type='SegDataPreProcessor',
                mean=[0., 0., 0.],
                std=[255., 255., 255.],
                size=(32, 32)))


def toy_batch():
    torch.manual_seed(0)
    return dict(
        inputs=[
            torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
            for _ in range(2)
        ],
        data_samples=[
            SegDataSample(
                gt_sem_seg=PixelData(data=torch.randint(0, 3, (1, 32, 32))),
                metainfo=dict(img_shape=(32, 32), ori_shape=(32, 32)))
            for _ in range(2)
        ])


def train_step_router_update(model, data):
    """Router weight change of one SGD(lr=1) EncoderDecoder.train_step."""
    before = model.backbone.ffn.router.gate.weight.detach().clone()
    optim_wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=1.))
    model.train_step(data, optim_wrapper)
    return model.backbone.ffn.router.gate.weight.detach() - before


def test_balance_loss_gradient_reaches_router_in_encoder_decoder_train_step():
    data = toy_batch()
    without = build_segmentor(balance_loss_weight=0.)
    with torch.no_grad():
        without.backbone.ffn.router.gate.weight.normal_(0, 1.)
    weight = 0.5
    with_loss = copy.deepcopy(without)
    with_loss.backbone.ffn.balance_loss_weight = weight
    tokens = []
    with_loss.backbone.ffn.register_forward_pre_hook(
        lambda module, args: tokens.append(args[0].detach().reshape(-1, 16)))
    router_weight = with_loss.backbone.ffn.router.gate.weight.detach().clone()

    update_without = train_step_router_update(without, data)
    update_with = train_step_router_update(with_loss, data)

    # Expected: SGD(lr=1) moves the router by -weight * d(importance)/dW more.
    router_weight.requires_grad_()
    probs = torch.softmax(tokens[0] @ router_weight.t(), -1)
    aux_grad, = torch.autograd.grad(weight * importance_cv2(probs),
                                    router_weight)
    assert aux_grad.abs().max() > 1e-4
    torch.testing.assert_close(
        update_with - update_without, -aux_grad, rtol=1e-4, atol=1e-6)


def train_step_updates(model, data):
    """Logged losses and the change of every parameter of one SGD(lr=1)
    train_step, i.e. minus the gradients."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optim_wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=1.))
    log_vars = model.train_step(data, optim_wrapper)
    return log_vars, {
        n: p.detach() - before[n]
        for n, p in model.named_parameters()
    }


def test_loss_moe_is_logged_in_the_summed_loss_with_the_injected_gradients():
    """With attach_loss_moe the losses hold loss_moe = weight * balance loss,
    mmengine's summed loss includes it, and every gradient equals the
    injected mode's (tolerance 1e-6)."""
    data = toy_batch()
    injected = build_segmentor(balance_loss_weight=0.5)
    with torch.no_grad():
        injected.backbone.ffn.router.gate.weight.normal_(0, 1.)
    as_loss = copy.deepcopy(injected)
    handle = attach_loss_moe(as_loss)
    tokens = []
    as_loss.backbone.ffn.register_forward_pre_hook(
        lambda module, args: tokens.append(args[0].detach().reshape(-1, 16)))
    router_weight = as_loss.backbone.ffn.router.gate.weight.detach().clone()

    log_injected, update_injected = train_step_updates(injected, data)
    log_as_loss, update_as_loss = train_step_updates(as_loss, data)

    assert 'loss_moe' not in log_injected
    probs = torch.softmax(tokens[0] @ router_weight.t(), -1)
    expected = 0.5 * importance_cv2(probs)
    torch.testing.assert_close(log_as_loss['loss_moe'], expected)
    torch.testing.assert_close(
        log_as_loss['loss'],
        log_as_loss['decode.loss_ce'] + log_as_loss['loss_moe'])
    torch.testing.assert_close(log_as_loss['decode.loss_ce'],
                               log_injected['loss'])
    assert update_injected['backbone.ffn.router.gate.weight'].abs().max() > 0
    for name, update in update_injected.items():
        torch.testing.assert_close(
            update_as_loss[name], update, rtol=0, atol=1e-6, msg=name)

    detach_loss_moe(as_loss, handle)
    assert as_loss.backbone.ffn.balance_loss_mode == 'gradient'
    log_again, _ = train_step_updates(as_loss, data)
    assert 'loss_moe' not in log_again
