# RMoE Swin-S Mask R-CNN on COCO; dense twin: mmdet's
# mask-rcnn_swin-s-p4-w7_fpn_amp-ms-crop-3x_coco (the only Swin-S Mask R-CNN
# mmdet ships: 3x schedule, multi-scale crop, AMP).
_base_ = ['mmdet::swin/mask-rcnn_swin-s-p4-w7_fpn_amp-ms-crop-3x_coco.py']
custom_imports = dict(imports=['rmoe_mm'], allow_failed_imports=False)

pretrained = 'checkpoints/swin_small_patch4_window7_224.pth'
model = dict(
    backbone=dict(
        type='RMoESwinTransformer',
        moe_blocks=None,
        moe_cfg=dict(num_experts=8, top_k=1),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
