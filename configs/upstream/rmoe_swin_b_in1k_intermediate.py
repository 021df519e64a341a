# RMoE-I's intermediate stage for Swin-B (224 px, window 7) on ImageNet-1k:
# as rmoe_swin_t_in1k_intermediate.py (5 of the dense pretraining's 300
# epochs) from the official Swin-B ImageNet-1k checkpoint, with
# mmpretrain's Swin-B recipe (drop path 0.5).
_base_ = ['./rmoe_swin_t_in1k_intermediate.py']
dense_checkpoint = 'checkpoints/swin_base_patch4_window7_224.pth'
model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.5,
        init_cfg=dict(checkpoint=dense_checkpoint)),
    head=dict(in_channels=1024, init_cfg=dict(checkpoint=dense_checkpoint)))
