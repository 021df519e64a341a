# RMoE Swin-S UperNet on ADE20K; dense twin: mmseg's
# swin-small-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.
_base_ = [
    'mmseg::swin/swin-small-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'  # noqa
]
custom_imports = dict(imports=['rmoe_mm'], allow_failed_imports=False)

checkpoint_file = 'checkpoints/swin_small_patch4_window7_224.pth'
model = dict(
    backbone=dict(
        type='RMoESwinTransformer',
        moe_blocks=None,
        moe_cfg=dict(num_experts=8, top_k=1),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)))
