# Swin-T Mask R-CNN COCO, RMoE-D: the dense Swin-T checkpoint converted to
# RMoE and finetuned on COCO with everything training, on the dense 1x
# schedule.
_base_ = ['../rmoe_swin_t_mask_rcnn_coco.py']
custom_hooks = [
    dict(
        type='RMoEStageHook',
        stages=[dict(name='finetune', begin=0)],
        by_epoch=True),
    dict(type='MoEStatsHook'),
    dict(type='IterationSeedHook'),
]
