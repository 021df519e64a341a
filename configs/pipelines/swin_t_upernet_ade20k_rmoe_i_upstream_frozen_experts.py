# Swin-T UperNet ADE20K, RMoE-I with frozen experts (Tutel's observation:
# SwinV2-MoE-B on COCO gained 0.4 box AP over dense with the MoE layers
# frozen downstream, lost 1.7 finetuning them): the paper's RMoE-I
# (swin_t_upernet_ade20k_rmoe_i_upstream.py) whose finetune keeps every
# expert residual and router at its intermediate-stage value; the cores,
# the rest of the backbone and the heads train.
_base_ = ['./swin_t_upernet_ade20k_rmoe_i_upstream.py']
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
