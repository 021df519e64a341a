# RMoE Swin-T Mask R-CNN on COCO; dense twin: mmdet's
# mask-rcnn_swin-t-p4-w7_fpn_1x_coco (1x schedule), initialised from the
# official Swin-T ImageNet-1k checkpoint (docs/swin.md).
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py']
custom_imports = dict(imports=['rmoe_mm'], allow_failed_imports=False)

pretrained = 'checkpoints/swin_tiny_patch4_window7_224.pth'
model = dict(
    backbone=dict(
        type='RMoESwinTransformer',
        moe_blocks=None,  # odd (shifted-window) blocks of the last two stages
        moe_cfg=dict(num_experts=8, top_k=1),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
