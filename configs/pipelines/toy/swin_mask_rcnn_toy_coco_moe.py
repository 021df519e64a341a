# Toy COCO, full-MoE upper bound (sparse upcycling): the dense upstream
# checkpoint converted to MoE and trained with everything from the start: an
# MoE "upstream" stage as long as RMoE-I's intermediate stage, then the same
# finetune schedule. Only the frozen core distinguishes it from RMoE-I.
_base_ = ['../../toy/rmoe_swin_mask_rcnn_toy_coco.py']
load_from = 'work_dirs/upstream/swin_mask_rcnn_toy_coco/iter_400.pth'

upstream_iters = 50
finetune_iters = 200
warmup_iters = 20
max_iters = upstream_iters + finetune_iters
optim_wrapper = dict(optimizer=dict(lr=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=warmup_iters),
    dict(type='LinearLR', start_factor=0.01, by_epoch=False,
         begin=upstream_iters, end=upstream_iters + warmup_iters),
    dict(type='MultiStepLR', by_epoch=False, begin=upstream_iters,
         end=max_iters, milestones=[150], gamma=0.1),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(checkpoint=dict(interval=100))
custom_hooks = [
    dict(type='RMoEStageHook', stages=[
        dict(name='upstream_moe', begin=0),
        dict(name='finetune', begin=upstream_iters)]),
    dict(type='MoEStatsHook'),
    dict(type='IterationSeedHook'),
]
