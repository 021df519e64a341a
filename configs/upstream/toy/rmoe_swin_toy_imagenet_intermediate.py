# The paper's RMoE-I intermediate stage on the toy: the dense toy classifier
# (swin_toy_imagenet.py) converted to RMoE (odd blocks of stages 3-4, 8
# experts, top-1; cores from the dense FFNs, new residuals and routers) and
# trained on toy ImageNet with the backbone core frozen for the whole run:
# residuals, routers and the head train. The downstream configs
# configs/pipelines/toy/*_rmoe_i_upstream.py start from its checkpoint.
_base_ = ['./swin_toy_imagenet.py']

dense_checkpoint = 'work_dirs/upstream/swin_toy_imagenet/iter_600.pth'
model = dict(
    backbone=dict(
        moe_blocks=None,
        moe_cfg=dict(num_experts=8, top_k=1),
        init_cfg=dict(
            type='Pretrained',
            checkpoint=dense_checkpoint,
            prefix='backbone.',
            final_norm=True)),
    head=dict(
        init_cfg=dict(
            _delete_=True, type='PretrainedHead',
            checkpoint=dense_checkpoint)))

# 100 iterations, 1/6 of the dense toy pretraining: at full scale the stage
# is a few % of the dense schedule (configs/upstream/rmoe_swin_t_in1k_*), but
# a few toy iterations would not move the residuals measurably.
max_iters = 100
warmup_iters = 10
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.01,
        by_epoch=False,
        begin=0,
        end=warmup_iters),
    dict(
        type='CosineAnnealingLR',
        eta_min=1e-5,
        by_epoch=False,
        begin=warmup_iters,
        end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(checkpoint=dict(interval=max_iters))
custom_hooks = [
    dict(
        type='RMoEStageHook',
        stages=[dict(name='intermediate', begin=0, frozen=['core'])]),
    dict(type='MoEStatsHook'),
    dict(type='IterationSeedHook'),
]
