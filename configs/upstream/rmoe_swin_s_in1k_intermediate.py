# RMoE-I's intermediate stage for Swin-S on ImageNet-1k: as
# rmoe_swin_t_in1k_intermediate.py (5 of the dense pretraining's 300 epochs)
# from the official Swin-S checkpoint, with mmpretrain's Swin-S recipe
# (drop path 0.3).
_base_ = ['./rmoe_swin_t_in1k_intermediate.py']
dense_checkpoint = 'checkpoints/swin_small_patch4_window7_224.pth'
model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint=dense_checkpoint)),
    head=dict(in_channels=768, init_cfg=dict(checkpoint=dense_checkpoint)))
