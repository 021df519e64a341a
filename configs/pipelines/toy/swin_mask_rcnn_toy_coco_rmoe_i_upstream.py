# Toy COCO, RMoE-I as in the paper: the RMoE classifier of the upstream
# intermediate stage (configs/upstream/toy/
# rmoe_swin_toy_imagenet_intermediate.py) finetuned with everything
# training; its whole backbone loads, residuals and routers included. Same
# schedule as the dense pipeline.
_base_ = ['./swin_mask_rcnn_toy_coco_rmoe_d.py']
upstream_checkpoint = \
    'work_dirs/upstream/rmoe_swin_toy_imagenet_intermediate/iter_100.pth'
model = dict(
    backbone=dict(
        init_cfg=dict(
            checkpoint=upstream_checkpoint,
            strict=True,  # all but the dense-prediction norms and the head
            allowed_missing=['norm0.', 'norm1.', 'norm2.'],
            allowed_unused=['head.'])))
