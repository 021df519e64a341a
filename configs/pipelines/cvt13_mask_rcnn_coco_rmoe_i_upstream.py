# CvT-13 Mask R-CNN COCO, RMoE-I as in the paper: the RMoE CvT-13 classifier
# of the upstream intermediate stage (configs/upstream/
# rmoe_cvt13_in1k_intermediate.py) finetuned on COCO with everything
# training, on the dense CvT-13 Mask R-CNN's 1x schedule
# (configs/cvt13_mask_rcnn_coco.py). Its backbone loads from the
# whole-classifier checkpoint; the classification head is left out.
_base_ = ['../rmoe_cvt13_mask_rcnn_coco.py']
intermediate_checkpoint = \
    'work_dirs/rmoe_cvt13_in1k_intermediate/epoch_5.pth'
model = dict(
    backbone=dict(
        init_cfg=dict(
            checkpoint=intermediate_checkpoint,
            prefix='backbone.',
            strict=True,  # all but the dense-prediction layers and the head
            allowed_missing=['norm0.', 'norm1.', 'extra_embed.'],
            allowed_unused=['head.'])))
custom_hooks = [
    dict(
        type='RMoEStageHook',
        by_epoch=True,
        stages=[dict(name='finetune', begin=0)]),
    dict(type='MoEStatsHook'),
    dict(type='IterationSeedHook'),
]
