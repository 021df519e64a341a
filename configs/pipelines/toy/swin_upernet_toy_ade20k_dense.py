# Toy ADE20K, dense lower bound: the dense toy classifier (the toy "ImageNet
# checkpoint", configs/upstream/toy/swin_toy_imagenet.py) finetuned as the toy
# Swin UperNet for `finetune_iters`; decode and auxiliary heads start from
# scratch. The backbone is RMoESwinTransformer without MoE blocks, i.e.
# mmseg's Swin, so that every pipeline loads its checkpoint through the same
# code. Every toy pipeline of this task has this finetune schedule.
_base_ = ['../../toy/swin_upernet_toy_ade20k.py']
upstream_checkpoint = 'work_dirs/upstream/swin_toy_imagenet/iter_600.pth'
model = dict(
    backbone=dict(
        type='RMoESwinTransformer',
        moe_blocks='none',
        init_cfg=dict(
            type='Pretrained',
            checkpoint=upstream_checkpoint,
            prefix='backbone.')))

finetune_iters = 300
warmup_iters = 20
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.01,
        by_epoch=False,
        begin=0,
        end=warmup_iters),
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=1.0,
        by_epoch=False,
        begin=warmup_iters,
        end=finetune_iters),
]
train_cfg = dict(
    type='IterBasedTrainLoop',
    max_iters=finetune_iters,
    val_interval=finetune_iters)
default_hooks = dict(checkpoint=dict(interval=finetune_iters))
custom_hooks = [dict(type='IterationSeedHook')]
