# RMoE-I's intermediate stage as in the paper, for CvT-13 on ImageNet-1k:
# the official CvT-13 ImageNet-1k checkpoint (docs/cvt.md) converted to
# RMoE (odd blocks of the last two stages, 8 experts, top-1) inside
# mmpretrain's ImageClassifier, trained on ImageNet-1k with the backbone
# core frozen: residuals, routers and the head train. The classifier is the
# official one: the last stage's cls token, its norm (the checkpoint's
# final `norm`) and the linear head (the checkpoint's `head`). mmpretrain's
# ImageNet recipe of Swin (224 px, AdamW, Mixup/CutMix, label smoothing),
# as mmpretrain has no CvT recipe; 5 epochs, as for Swin-T: 5 / 300 = 1.7%
# of the official CvT-13 pretraining (300 epochs).
# Downstream: configs/pipelines/cvt13_*_rmoe_i_upstream.py read
# work_dirs/rmoe_cvt13_in1k_intermediate/epoch_5.pth.
_base_ = ['./rmoe_swin_t_in1k_intermediate.py']
dense_checkpoint = 'checkpoints/CvT-13-224x224-IN-1k.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='RMoECvT',
        arch='13',
        drop_path_rate=(0., 0., 0.1),
        out_indices=(2, ),
        extra_level=None,
        out_type='cls_token',
        moe_blocks=None,
        moe_cfg=dict(num_experts=8, top_k=1),
        init_cfg=dict(
            type='Pretrained', checkpoint=dense_checkpoint, final_norm=True)),
    neck=None,
    head=dict(in_channels=384, init_cfg=dict(checkpoint=dense_checkpoint)))
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'cls_token': dict(decay_mult=0.)}))
