# Swin-T UperNet ADE20K, full-MoE upper bound (sparse upcycling): the dense
# Swin-T checkpoint converted to MoE (every expert a copy of the dense FFN plus
# small noise, new routers), an MoE "upstream" stage of 8k iterations with
# everything training, then the dense pipeline's 160k schedule, shifted.
# Only the frozen core distinguishes it from RMoE-I.
_base_ = ['../rmoe_swin_t_upernet_ade20k.py']

upstream_iters = 8000
finetune_iters = 160000
warmup_iters = 1500
max_iters = upstream_iters + finetune_iters
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
         end=warmup_iters),
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False,
         begin=upstream_iters, end=upstream_iters + warmup_iters),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False,
         begin=upstream_iters + warmup_iters, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=16000)
custom_hooks = [
    dict(type='RMoEStageHook', stages=[
        dict(name='upstream_moe', begin=0),
        dict(name='finetune', begin=upstream_iters)]),
    dict(type='MoEStatsHook'),
    dict(type='IterationSeedHook'),
]
