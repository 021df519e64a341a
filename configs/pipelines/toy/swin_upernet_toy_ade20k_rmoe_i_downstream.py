# Toy ADE20K, RMoE-I *downstream* (a variant, not the paper's RMoE-I): the
# dense toy classifier converted to RMoE, an intermediate stage of
# `intermediate_iters` on the downstream data (toy ADE20K) with the backbone
# core frozen (residuals, routers, neck and heads train), then the dense
# pipeline's finetune schedule with everything training. The paper's RMoE-I
# runs its intermediate stage on the upstream data:
# swin_upernet_toy_ade20k_rmoe_i_upstream.py. The learning rate stays at its
# base value through the intermediate stage (mmengine's schedulers multiply
# the current value, so a decayed rate could not warm up again).
_base_ = ['./swin_upernet_toy_ade20k_rmoe_d.py']

intermediate_iters = 100
finetune_iters = 300
warmup_iters = 20
max_iters = intermediate_iters + finetune_iters
param_scheduler = [
    # intermediate stage: warm-up, then constant
    dict(
        type='LinearLR',
        start_factor=0.01,
        by_epoch=False,
        begin=0,
        end=warmup_iters),
    # finetune stage: the dense pipeline's schedule, shifted
    dict(
        type='LinearLR',
        start_factor=0.01,
        by_epoch=False,
        begin=intermediate_iters,
        end=intermediate_iters + warmup_iters),
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=1.0,
        by_epoch=False,
        begin=intermediate_iters + warmup_iters,
        end=max_iters),
]
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(checkpoint=dict(interval=max_iters))
custom_hooks = [
    dict(
        type='RMoEStageHook',
        stages=[
            dict(name='intermediate', begin=0, frozen=['core']),
            dict(name='finetune', begin=intermediate_iters)
        ]),
    dict(type='MoEStatsHook'),
    dict(type='IterationSeedHook'),
]
