# Toy COCO, RMoE-D: the dense toy classifier converted to RMoE (cores from
# its FFNs, new residuals and routers) and finetuned with everything
# training. It is the dense pipeline (same checkpoint, same schedule, by
# inheritance) with the backbone of
# configs/toy/rmoe_swin_mask_rcnn_toy_coco.py.
_base_ = ['./swin_mask_rcnn_toy_coco_dense.py']
model = dict(
    backbone=dict(moe_blocks=None, moe_cfg=dict(num_experts=8, top_k=1)))
custom_hooks = [
    dict(type='RMoEStageHook', stages=[dict(name='finetune', begin=0)]),
    dict(type='MoEStatsHook'),
    dict(type='IterationSeedHook'),
]
