# Swin-T Mask R-CNN COCO, full MoE upcycled on the downstream data (a
# variant of the upper bound; the paper's, an MoE pretrained upstream, is
# swin_t_mask_rcnn_coco_moe_upstream.py): the dense Swin-T checkpoint
# converted to MoE, a first epoch on COCO with everything training, then the
# dense 1x schedule shifted by one epoch. Only the frozen core distinguishes
# it from swin_t_mask_rcnn_coco_rmoe_i_downstream.py.
_base_ = ['./swin_t_mask_rcnn_coco_rmoe_i_downstream.py']

custom_hooks = [
    dict(
        type='RMoEStageHook',
        by_epoch=True,
        stages=[
            dict(name='upstream_moe', begin=0),
            dict(name='finetune', begin={{_base_.intermediate_epochs}})
        ]),
    dict(type='MoEStatsHook'),
    dict(type='IterationSeedHook'),
]
