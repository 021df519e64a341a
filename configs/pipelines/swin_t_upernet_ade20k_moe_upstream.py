# Swin-T UperNet ADE20K, full-MoE upper bound as in the paper: an MoE Swin-T
# trained from scratch on ImageNet-1k (configs/upstream/moe_swin_t_in1k.py,
# the dense pretraining's 300 epochs) finetuned on ADE20K with everything
# training, on the dense pipeline's 160k schedule.
_base_ = ['./swin_t_upernet_ade20k_rmoe_d.py']
upstream_checkpoint = 'work_dirs/moe_swin_t_in1k/epoch_300.pth'
model = dict(
    backbone=dict(
        init_cfg=dict(
            checkpoint=upstream_checkpoint,
            prefix='backbone.',
            strict=True,  # all but the dense-prediction norms and the head
            allowed_missing=['norm0.', 'norm1.', 'norm2.'],
            allowed_unused=['head.'])))
