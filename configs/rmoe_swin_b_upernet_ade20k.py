# RMoE Swin-B (window 12, ImageNet-22k 384 px) UperNet on ADE20K; dense twin:
# mmseg's swin-base-patch4-window12-in22k-384x384-pre_upernet_8xb2-160k_
# ade20k-512x512.
_base_ = [
    'mmseg::swin/swin-base-patch4-window12-in22k-384x384-pre_upernet_8xb2-160k_ade20k-512x512.py'  # noqa
]
custom_imports = dict(imports=['rmoe_mm'], allow_failed_imports=False)

checkpoint_file = 'checkpoints/swin_base_patch4_window12_384_22k.pth'
model = dict(
    backbone=dict(
        type='RMoESwinTransformer',
        moe_blocks=None,
        moe_cfg=dict(num_experts=8, top_k=1),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)))
