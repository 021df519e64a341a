# RMoE version of the dense toy Swin Mask R-CNN (swin_mask_rcnn_toy_coco.py):
# only the backbone type and the MoE settings change.
_base_ = ['./swin_mask_rcnn_toy_coco.py']
model = dict(
    backbone=dict(
        type='RMoESwinTransformer',
        moe_blocks=None,
        moe_cfg=dict(num_experts=8, top_k=1)))
