# Toy COCO, RMoE-I with frozen experts (Tutel: SwinV2-MoE-B gained 0.4 box
# AP on COCO with the MoE layers frozen, lost 1.7 finetuning them): the
# paper's RMoE-I (swin_mask_rcnn_toy_coco_rmoe_i_upstream.py) whose finetune
# keeps every expert residual and router at its intermediate-stage value.
_base_ = ['./swin_mask_rcnn_toy_coco_rmoe_i_upstream.py']
custom_hooks = [
    dict(
        type='RMoEStageHook',
        stages=[
            dict(
                name='finetune_frozen_experts',
                begin=0,
                frozen=['residual', 'router'])
        ]),
    dict(type='MoEStatsHook'),
    dict(type='IterationSeedHook'),
]
