# Swin-T UperNet ADE20K, dense lower bound: mmseg's Swin-T UperNet (160k,
# 512x512) from the dense ImageNet-1k Swin-T checkpoint. The backbone is
# RMoESwinTransformer without MoE blocks, i.e. mmseg's Swin-T (equal outputs,
# tests/backbones), so that every pipeline loads the checkpoint the same way.
_base_ = ['../rmoe_swin_t_upernet_ade20k.py']
model = dict(backbone=dict(moe_blocks='none'))
custom_hooks = [dict(type='IterationSeedHook')]
