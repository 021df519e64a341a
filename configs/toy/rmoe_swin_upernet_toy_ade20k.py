# RMoE version of the dense toy Swin UperNet (swin_upernet_toy_ade20k.py):
# only the backbone type and the MoE settings change (the defaults: 8 experts,
# top-1, odd blocks of stages 3-4).
_base_ = ['./swin_upernet_toy_ade20k.py']
model = dict(
    backbone=dict(
        type='RMoESwinTransformer',
        moe_blocks=None,
        moe_cfg=dict(num_experts=8, top_k=1)))
