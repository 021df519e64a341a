# Swin-T Mask R-CNN COCO, full-MoE upper bound as in the paper: an MoE
# Swin-T trained from scratch on ImageNet-1k (configs/upstream/
# moe_swin_t_in1k.py, 300 epochs) finetuned on COCO with everything
# training, on the dense 1x schedule.
_base_ = ['./swin_t_mask_rcnn_coco_rmoe_d.py']
upstream_checkpoint = 'work_dirs/moe_swin_t_in1k/epoch_300.pth'
model = dict(
    backbone=dict(
        init_cfg=dict(
            checkpoint=upstream_checkpoint,
            prefix='backbone.',
            strict=True,  # all but the dense-prediction norms and the head
            allowed_missing=['norm0.', 'norm1.', 'norm2.'],
            allowed_unused=['head.'])))
