# Toy ADE20K, full-MoE upper bound (sparse upcycling): the dense upstream
# checkpoint converted to MoE (every expert a copy of the dense FFN plus
# small noise, new routers) and trained with everything from the start: an
# MoE "upstream" stage as long as RMoE-I's intermediate stage, then the same
# finetune schedule. Only the frozen core distinguishes it from RMoE-I.
_base_ = ['../../toy/rmoe_swin_upernet_toy_ade20k.py']
load_from = 'work_dirs/upstream/swin_upernet_toy_ade20k/iter_600.pth'

upstream_iters = 100
finetune_iters = 300
warmup_iters = 20
max_iters = upstream_iters + finetune_iters
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=warmup_iters),
    dict(type='LinearLR', start_factor=0.01, by_epoch=False,
         begin=upstream_iters, end=upstream_iters + warmup_iters),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False,
         begin=upstream_iters + warmup_iters, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
default_hooks = dict(checkpoint=dict(interval=100))
custom_hooks = [
    dict(type='RMoEStageHook', stages=[
        dict(name='upstream_moe', begin=0),
        dict(name='finetune', begin=upstream_iters)]),
    dict(type='MoEStatsHook'),
    dict(type='IterationSeedHook'),
]
