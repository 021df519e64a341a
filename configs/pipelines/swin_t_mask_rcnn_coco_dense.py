# Swin-T Mask R-CNN COCO, dense lower bound: mmdet's Swin-T Mask R-CNN (1x)
# from the dense ImageNet-1k Swin-T checkpoint. The backbone is
# RMoESwinTransformer without MoE blocks, i.e. mmdet's Swin-T (equal outputs,
# tests/backbones), so that every pipeline loads the checkpoint the same way.
_base_ = ['../rmoe_swin_t_mask_rcnn_coco.py']
model = dict(backbone=dict(moe_blocks='none'))
custom_hooks = [dict(type='IterationSeedHook')]
