# Toy COCO, RMoE-I *downstream* (a variant, not the paper's RMoE-I): the
# dense toy classifier converted to RMoE, an intermediate stage on the
# downstream data (toy COCO) with the backbone core frozen (residuals,
# routers, neck and heads train) at the constant base learning rate, then
# the dense pipeline's finetune schedule, shifted, with everything training.
# The paper's RMoE-I: swin_mask_rcnn_toy_coco_rmoe_i_upstream.py.
_base_ = ['./swin_mask_rcnn_toy_coco_rmoe_d.py']

intermediate_iters = 100
finetune_iters = 400
warmup_iters = 50
max_iters = intermediate_iters + finetune_iters
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.01,
        by_epoch=False,
        begin=0,
        end=warmup_iters),
    dict(
        type='LinearLR',
        start_factor=0.01,
        by_epoch=False,
        begin=intermediate_iters,
        end=intermediate_iters + warmup_iters),
    # milestones count from `begin`
    dict(
        type='MultiStepLR',
        by_epoch=False,
        begin=intermediate_iters,
        end=max_iters,
        milestones=[300],
        gamma=0.1),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(checkpoint=dict(interval=max_iters))
custom_hooks = [
    dict(
        type='RMoEStageHook',
        stages=[
            dict(name='intermediate', begin=0, frozen=['core']),
            dict(name='finetune', begin=intermediate_iters)
        ]),
    dict(type='MoEStatsHook'),
    dict(type='IterationSeedHook'),
]
