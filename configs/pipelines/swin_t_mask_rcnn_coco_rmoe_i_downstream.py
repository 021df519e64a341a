# Swin-T Mask R-CNN COCO, RMoE-I *downstream* (a variant, not the paper's
# RMoE-I, which is swin_t_mask_rcnn_coco_rmoe_i_upstream.py): the dense
# Swin-T checkpoint converted to RMoE, one intermediate epoch on COCO with the
# backbone core frozen (residuals, routers, FPN and heads train) at the
# constant base learning rate, then the dense 1x schedule (12 epochs),
# shifted by one epoch, with everything training. The finetune warm-up lasts
# 1000 iterations at 7330 iterations per epoch (COCO train2017 at 8 GPUs x 2
# images).
_base_ = ['../rmoe_swin_t_mask_rcnn_coco.py']

intermediate_epochs = 1
finetune_epochs = 12
max_epochs = intermediate_epochs + finetune_epochs
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
        end=1000),
    dict(
        type='LinearLR',
        start_factor=0.001,
        by_epoch=True,
        begin=intermediate_epochs,
        end=intermediate_epochs + 1000 / 7330,
        convert_to_iter_based=True),
    # milestones count from `begin`: epochs 9 and 12 of 13
    dict(
        type='MultiStepLR',
        by_epoch=True,
        begin=intermediate_epochs,
        end=max_epochs,
        milestones=[8, 11],
        gamma=0.1),
]
train_cfg = dict(max_epochs=max_epochs)
custom_hooks = [
    dict(
        type='RMoEStageHook',
        by_epoch=True,
        stages=[
            dict(name='intermediate', begin=0, frozen=['core']),
            dict(name='finetune', begin=intermediate_epochs)
        ]),
    dict(type='MoEStatsHook'),
    dict(type='IterationSeedHook'),
]
