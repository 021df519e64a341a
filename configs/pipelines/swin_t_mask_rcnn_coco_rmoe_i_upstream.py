# Swin-T Mask R-CNN COCO, RMoE-I as in the paper: the RMoE Swin-T classifier
# of the upstream intermediate stage (configs/upstream/
# rmoe_swin_t_in1k_intermediate.py) finetuned on COCO with everything
# training, on the dense 1x schedule. Its backbone (cores, residuals,
# routers, norms) loads from the whole-classifier checkpoint; the
# classification head is left out. It is RMoE-D with another checkpoint.
_base_ = ['./swin_t_mask_rcnn_coco_rmoe_d.py']
intermediate_checkpoint = \
    'work_dirs/rmoe_swin_t_in1k_intermediate/epoch_5.pth'
model = dict(
    backbone=dict(
        init_cfg=dict(
            checkpoint=intermediate_checkpoint,
            prefix='backbone.',
            strict=True,  # all but the dense-prediction norms and the head
            allowed_missing=['norm0.', 'norm1.', 'norm2.'],
            allowed_unused=['head.'])))
