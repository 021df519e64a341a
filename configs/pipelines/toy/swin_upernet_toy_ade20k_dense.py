# Toy ADE20K, dense lower bound: the dense upstream checkpoint (see
# docs/pipelines.md) finetuned for `finetune_iters` more iterations. The RMoE
# pipelines start from the same checkpoint with the same finetune schedule.
_base_ = ['../../toy/swin_upernet_toy_ade20k.py']
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
custom_hooks = [dict(type='IterationSeedHook')]
