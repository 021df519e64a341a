# Toy ADE20K, full-MoE upper bound as in the paper: an MoE classifier trained
# from scratch on toy ImageNet (configs/upstream/toy/moe_swin_toy_imagenet.py,
# the dense pretraining's schedule with MoE layers) finetuned with everything
# training on the dense pipeline's schedule.
_base_ = ['./swin_upernet_toy_ade20k_rmoe_d.py']
upstream_checkpoint = 'work_dirs/upstream/moe_swin_toy_imagenet/iter_600.pth'
model = dict(
    backbone=dict(
        init_cfg=dict(
            checkpoint=upstream_checkpoint,
            strict=True,  # all but the dense-prediction norms and the head
            allowed_missing=['norm0.', 'norm1.', 'norm2.'],
            allowed_unused=['head.'])))
