# Toy COCO, RMoE-I: the dense upstream checkpoint converted to RMoE, an
# intermediate stage with the backbone core frozen (residuals, routers, neck
# and heads train) at the constant base learning rate, then the dense
# pipeline's finetune schedule, shifted, with everything training.
_base_ = ['../../toy/rmoe_swin_mask_rcnn_toy_coco.py']
load_from = 'work_dirs/upstream/swin_mask_rcnn_toy_coco/iter_400.pth'

intermediate_iters = 50
finetune_iters = 200
warmup_iters = 20
max_iters = intermediate_iters + finetune_iters
optim_wrapper = dict(optimizer=dict(lr=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=warmup_iters),
    dict(type='LinearLR', start_factor=0.01, by_epoch=False,
         begin=intermediate_iters, end=intermediate_iters + warmup_iters),
    # milestones count from `begin`
    dict(type='MultiStepLR', by_epoch=False, begin=intermediate_iters,
         end=max_iters, milestones=[150], gamma=0.1),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(checkpoint=dict(interval=100))
custom_hooks = [
    dict(type='RMoEStageHook', stages=[
        dict(name='intermediate', begin=0, frozen=['core']),
        dict(name='finetune', begin=intermediate_iters)]),
    dict(type='MoEStatsHook'),
    dict(type='IterationSeedHook'),
]
