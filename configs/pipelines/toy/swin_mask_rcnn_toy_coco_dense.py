# Toy COCO, dense lower bound: the dense toy classifier (the toy "ImageNet
# checkpoint", configs/upstream/toy/swin_toy_imagenet.py) finetuned as the toy
# Swin Mask R-CNN for `finetune_iters`; neck and heads start from scratch.
# The backbone is RMoESwinTransformer without MoE blocks, i.e. mmdet's Swin,
# so that every pipeline loads its checkpoint through the same code. Every
# toy pipeline of this task has this finetune schedule.
_base_ = ['../../toy/swin_mask_rcnn_toy_coco.py']
upstream_checkpoint = 'work_dirs/upstream/swin_toy_imagenet/iter_600.pth'
model = dict(
    backbone=dict(
        type='RMoESwinTransformer',
        moe_blocks='none',
        init_cfg=dict(
            _delete_=True,
            type='Pretrained',
            checkpoint=upstream_checkpoint,
            prefix='backbone.')))

finetune_iters = 400
warmup_iters = 50
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.01,
        by_epoch=False,
        begin=0,
        end=warmup_iters),
    dict(
        type='MultiStepLR',
        by_epoch=False,
        begin=0,
        end=finetune_iters,
        milestones=[300],
        gamma=0.1),
]
train_cfg = dict(max_iters=finetune_iters, val_interval=finetune_iters)
default_hooks = dict(checkpoint=dict(interval=finetune_iters))
custom_hooks = [dict(type='IterationSeedHook')]
