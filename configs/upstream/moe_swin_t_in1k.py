# The full-MoE upper bound's upstream stage as in the paper: Swin-T with
# MoE FFNs (the RMoE layout: odd blocks of stages 3-4, 8 experts, top-1)
# trained from scratch on ImageNet-1k on the dense pretraining's recipe and
# schedule (swin_t_in1k.py: mmpretrain's, 300 epochs), everything training.
# The experts start independent (core and residual both drawn with std
# 0.02). This is the expensive stage RMoE avoids;
# tools/analysis/pipeline_cost.py prices it. Downstream:
# configs/pipelines/swin_t_*_moe_upstream.py read
# work_dirs/moe_swin_t_in1k/epoch_300.pth.
_base_ = ['./swin_t_in1k.py']
model = dict(
    backbone=dict(
        moe_blocks=None,
        moe_cfg=dict(num_experts=8, top_k=1, residual_std=0.02)))
custom_hooks = [
    dict(
        type='RMoEStageHook',
        by_epoch=True,
        stages=[dict(name='upstream_moe', begin=0)]),
    dict(type='MoEStatsHook'),
    dict(type='IterationSeedHook'),
]
