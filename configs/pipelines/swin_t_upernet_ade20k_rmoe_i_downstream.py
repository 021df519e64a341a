# Swin-T UperNet ADE20K, RMoE-I *downstream* (a variant, not the paper's
# RMoE-I): the dense Swin-T checkpoint converted to RMoE, an intermediate
# stage of 8k iterations (5% of the finetune) on ADE20K with the backbone core
# frozen (residuals, routers, decode and auxiliary heads train) at the
# constant base learning rate, then the dense pipeline's 160k schedule,
# shifted, with everything training. The paper runs the intermediate stage on
# the upstream data (ImageNet): swin_t_upernet_ade20k_rmoe_i_upstream.py.
_base_ = ['../rmoe_swin_t_upernet_ade20k.py']

intermediate_iters = 8000
finetune_iters = 160000
warmup_iters = 1500
max_iters = intermediate_iters + finetune_iters
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-6,
        by_epoch=False,
        begin=0,
        end=warmup_iters),
    dict(
        type='LinearLR',
        start_factor=1e-6,
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
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=16000)
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
