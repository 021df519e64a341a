# RMoE Swin-L Mask R-CNN on COCO. mmdet ships no Swin-L Mask R-CNN, so this is
# mmdet's mask-rcnn_swin-t-p4-w7_fpn_1x_coco with the Swin-L sizes (window 7,
# ImageNet-22k 224 px checkpoint) and the FPN widened to Swin-L's channels;
# its dense twin is the same file with type='SwinTransformer' and
# convert_weights=True.
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py']
custom_imports = dict(imports=['rmoe_mm'], allow_failed_imports=False)

pretrained = 'checkpoints/swin_large_patch4_window7_224_22k.pth'
model = dict(
    backbone=dict(
        type='RMoESwinTransformer',
        pretrain_img_size=224,
        embed_dims=192,
        depths=[2, 2, 18, 2],
        num_heads=[6, 12, 24, 48],
        window_size=7,
        drop_path_rate=0.3,
        moe_blocks=None,
        moe_cfg=dict(num_experts=8, top_k=1),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[192, 384, 768, 1536]))
