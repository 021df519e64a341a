# Swin-T Mask R-CNN COCO, full-MoE upper bound (sparse upcycling): the dense
# Swin-T checkpoint converted to MoE, one MoE "upstream" epoch with
# everything training, then the dense 1x schedule shifted by one epoch. Only
# the frozen core distinguishes it from RMoE-I.
_base_ = ['../rmoe_swin_t_mask_rcnn_coco.py']

upstream_epochs = 1
finetune_epochs = 12
max_epochs = upstream_epochs + finetune_epochs
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=1000),
    dict(type='LinearLR', start_factor=0.001, by_epoch=True,
         begin=upstream_epochs, end=upstream_epochs + 1000 / 7330,
         convert_to_iter_based=True),
    dict(type='MultiStepLR', by_epoch=True, begin=upstream_epochs,
         end=max_epochs, milestones=[8, 11], gamma=0.1),
]
train_cfg = dict(max_epochs=max_epochs)
custom_hooks = [
    dict(type='RMoEStageHook', by_epoch=True, stages=[
        dict(name='upstream_moe', begin=0),
        dict(name='finetune', begin=upstream_epochs)]),
    dict(type='MoEStatsHook'),
    dict(type='IterationSeedHook'),
]
