# RMoE CvT-13 UperNet on ADE20K: the dense CvT-13 UperNet
# (cvt13_upernet_ade20k.py, 160k, 512x512) with the odd blocks of the last
# two stages turned into 8-expert top-1 RMoE FFNs; the cores start from the
# dense ImageNet-1k CvT-13 checkpoint (official or transformers layout,
# docs/cvt.md).
_base_ = ['./cvt13_upernet_ade20k.py']

model = dict(
    backbone=dict(
        type='RMoECvT',
        moe_blocks=None,  # odd blocks of the last two stages (as Swin-MoE)
        moe_cfg=dict(num_experts=8, top_k=1)))
