# Toy COCO, dense lower bound: the dense upstream checkpoint (see
# docs/pipelines.md) finetuned for `finetune_iters` more iterations. The RMoE
# pipelines start from the same checkpoint with the same finetune schedule.
_base_ = ['../../toy/swin_mask_rcnn_toy_coco.py']
load_from = 'work_dirs/upstream/swin_mask_rcnn_toy_coco/iter_400.pth'

finetune_iters = 200
warmup_iters = 20
optim_wrapper = dict(optimizer=dict(lr=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=warmup_iters),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=finetune_iters,
         milestones=[150], gamma=0.1),
]
train_cfg = dict(max_iters=finetune_iters, val_interval=finetune_iters)
default_hooks = dict(checkpoint=dict(interval=100))
custom_hooks = [dict(type='IterationSeedHook')]
