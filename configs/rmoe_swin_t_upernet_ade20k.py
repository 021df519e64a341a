# RMoE Swin-T UperNet on ADE20K: mmseg's dense Swin-T UperNet (160k, 512x512)
# with the odd blocks of stages 3-4 turned into 8-expert top-1 RMoE FFNs,
# initialised from the official Swin-T ImageNet-1k checkpoint (docs/swin.md).
_base_ = [
    'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'  # noqa
]
custom_imports = dict(imports=['rmoe_mm'], allow_failed_imports=False)

checkpoint_file = 'checkpoints/swin_tiny_patch4_window7_224.pth'
model = dict(
    backbone=dict(
        type='RMoESwinTransformer',
        moe_blocks=None,  # odd (shifted-window) blocks of the last two stages
        moe_cfg=dict(num_experts=8, top_k=1),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)))
