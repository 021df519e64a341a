# Toy ADE20K, RMoE-I as in the paper: the RMoE classifier of the upstream
# intermediate stage (configs/upstream/toy/
# rmoe_swin_toy_imagenet_intermediate.py: the dense toy classifier, then
# residuals and routers trained on toy ImageNet with the core frozen)
# finetuned with everything training. Its whole backbone loads, residuals
# and routers included; only the classifier head is left out. Same
# schedule as the dense pipeline (inherited from RMoE-D, which differs only
# in the checkpoint).
_base_ = ['./swin_upernet_toy_ade20k_rmoe_d.py']
upstream_checkpoint = \
    'work_dirs/upstream/rmoe_swin_toy_imagenet_intermediate/iter_100.pth'
model = dict(
    backbone=dict(
        init_cfg=dict(
            checkpoint=upstream_checkpoint,
            strict=True,  # all but the dense-prediction norms and the head
            allowed_missing=['norm0.', 'norm1.', 'norm2.'],
            allowed_unused=['head.'])))
