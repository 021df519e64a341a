# The full-MoE upper bound's upstream stage on the toy: the toy Swin
# classifier as an MoE (the RMoE layout: odd blocks of stages 3-4, 8 experts,
# top-1) trained from scratch on toy ImageNet with everything training, on
# the dense toy pretraining's schedule (swin_toy_imagenet.py). The experts
# start independent: core and residual are both drawn with std 0.02, so each
# expert's weight is a fresh random matrix, not a copy of one.
_base_ = ['./swin_toy_imagenet.py']

model = dict(
    backbone=dict(
        moe_blocks=None,
        moe_cfg=dict(num_experts=8, top_k=1, residual_std=0.02)))
custom_hooks = [
    dict(type='RMoEStageHook', stages=[dict(name='upstream_moe', begin=0)]),
    dict(type='MoEStatsHook'),
    dict(type='IterationSeedHook'),
]
