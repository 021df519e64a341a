# Toy ADE20K, RMoE-I with frozen experts (Tutel's observation on
# SwinV2-MoE: keeping the MoE layers frozen downstream helped COCO): the
# paper's RMoE-I (swin_upernet_toy_ade20k_rmoe_i_upstream.py) whose finetune
# keeps every expert residual and router at its intermediate-stage value;
# the core, neck and heads train.
_base_ = ['./swin_upernet_toy_ade20k_rmoe_i_upstream.py']
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
