# RMoE version of the dense toy CvT Mask R-CNN (cvt_mask_rcnn_toy_coco.py):
# only the backbone type and the MoE settings change.
_base_ = ['./cvt_mask_rcnn_toy_coco.py']
model = dict(
    backbone=dict(
        type='RMoECvT', moe_blocks=None, moe_cfg=dict(num_experts=8, top_k=1)))
