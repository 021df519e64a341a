# RMoE version of the dense toy CvT UperNet (cvt_upernet_toy_ade20k.py): only
# the backbone type and the MoE settings change (the defaults: 8 experts,
# top-1, odd blocks of the last two stages).
_base_ = ['./cvt_upernet_toy_ade20k.py']
model = dict(
    backbone=dict(
        type='RMoECvT', moe_blocks=None, moe_cfg=dict(num_experts=8, top_k=1)))
