# Swin-T Mask R-CNN COCO, full-MoE upper bound (sparse upcycling): the dense
# Swin-T checkpoint converted to MoE, one MoE "upstream" epoch with
# everything training, then the dense 1x schedule shifted by one epoch. Only
# the frozen core distinguishes it from RMoE-I, so this config is RMoE-I's
# with nothing frozen in the first stage.
_base_ = ['./swin_t_mask_rcnn_coco_rmoe_i.py']

custom_hooks = [
    dict(type='RMoEStageHook', by_epoch=True, stages=[
        dict(name='upstream_moe', begin=0),
        dict(name='finetune', begin={{_base_.intermediate_epochs}})]),
    dict(type='MoEStatsHook'),
    dict(type='IterationSeedHook'),
]
