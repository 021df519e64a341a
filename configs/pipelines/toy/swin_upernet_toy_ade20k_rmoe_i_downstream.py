# Toy ADE20K, RMoE-I: the dense upstream checkpoint converted to RMoE, an
# intermediate stage of `intermediate_iters` with the backbone core frozen
# (residuals, routers, neck and heads train), then the dense pipeline's
# finetune schedule with everything training. The learning rate stays at its
# base value through the intermediate stage (mmengine's schedulers multiply
# the current value, so a decayed rate could not warm up again).
_base_ = ['../../toy/rmoe_swin_upernet_toy_ade20k.py']
load_from = 'work_dirs/upstream/swin_upernet_toy_ade20k/iter_600.pth'

intermediate_iters = 100
finetune_iters = 300
warmup_iters = 20
max_iters = intermediate_iters + finetune_iters
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    # intermediate stage: warm-up, then constant
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=warmup_iters),
    # finetune stage: the dense pipeline's schedule, shifted
    dict(type='LinearLR', start_factor=0.01, by_epoch=False,
         begin=intermediate_iters, end=intermediate_iters + warmup_iters),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False,
         begin=intermediate_iters + warmup_iters, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
default_hooks = dict(checkpoint=dict(interval=100))
custom_hooks = [
    dict(type='RMoEStageHook', stages=[
        dict(name='intermediate', begin=0, frozen=['core']),
        dict(name='finetune', begin=intermediate_iters)]),
    dict(type='MoEStatsHook'),
    dict(type='IterationSeedHook'),
]
