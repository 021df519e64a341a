# Toy ADE20K, RMoE-D: the dense upstream checkpoint converted to RMoE (cores
# from the dense FFNs, new residuals and routers) and finetuned with
# everything training, on the dense pipeline's schedule.
_base_ = ['../../toy/rmoe_swin_upernet_toy_ade20k.py']
load_from = 'work_dirs/upstream/swin_upernet_toy_ade20k/iter_600.pth'

finetune_iters = 300
warmup_iters = 20
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=warmup_iters),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False,
         begin=warmup_iters, end=finetune_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=finetune_iters,
                 val_interval=finetune_iters)
default_hooks = dict(checkpoint=dict(interval=100))
custom_hooks = [
    dict(type='RMoEStageHook', stages=[dict(name='finetune', begin=0)]),
    dict(type='MoEStatsHook'),
    dict(type='IterationSeedHook'),
]
