# Swin-T UperNet ADE20K, RMoE-I as in the paper: the RMoE Swin-T classifier
# of the upstream intermediate stage (configs/upstream/
# rmoe_swin_t_in1k_intermediate.py: the official Swin-T, then 5 ImageNet-1k
# epochs with the core frozen) finetuned on ADE20K with everything training,
# on the dense pipeline's 160k schedule. The intermediate checkpoint is a
# whole mmpretrain classifier: its backbone (cores, residuals, routers,
# norms) loads, its classification head is left out. It is RMoE-D with
# another checkpoint.
_base_ = ['./swin_t_upernet_ade20k_rmoe_d.py']
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
