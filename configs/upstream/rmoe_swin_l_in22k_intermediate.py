# RMoE-I's intermediate stage for Swin-L (384 px, window 12) on
# ImageNet-22k: as rmoe_swin_b_in22k_intermediate.py (1 of the official 90
# epochs) from the official Swin-L 22k checkpoint that
# configs/rmoe_swin_l_upernet_ade20k.py starts from.
_base_ = ['./rmoe_swin_b_in22k_intermediate.py']
dense_checkpoint = 'checkpoints/swin_large_patch4_window12_384_22k.pth'
model = dict(
    backbone=dict(
        arch='large-w12', init_cfg=dict(checkpoint=dense_checkpoint)),
    head=dict(in_channels=1536, init_cfg=dict(checkpoint=dense_checkpoint)))
