# RMoE-I's intermediate stage as in the paper, for Swin-T on ImageNet-1k:
# the official Swin-T ImageNet-1k checkpoint (docs/swin.md) converted to
# RMoE (odd blocks of stages 3-4, 8 experts, top-1; cores from the dense
# FFNs, new residuals and routers) inside mmpretrain's ImageClassifier
# (global average pooling + linear head, both loaded from the checkpoint),
# trained on ImageNet-1k with the backbone core frozen for the whole run:
# residuals, routers and the head train. mmpretrain's Swin-T recipe
# (swin-tiny_16xb64_in1k.py: 16 GPUs x 64, AdamW, Mixup/CutMix, label
# smoothing) with a short schedule.
#
# Length: `intermediate_epochs` = 5, i.e. 5 / 300 = 1.7% of the images of
# the dense Swin-T pretraining. The paper's cost claim (RMoE-I < 3% more
# than the dense pipeline, upstream pretraining included) bounds this stage
# to a few % of the dense schedule; 5 epochs leave room for the RMoE
# overhead of the downstream finetune (tools/analysis/pipeline_cost.py and
# docs/pipelines.md give the accounting).
#
# The window rule of the official Swin is on (stage 4 at 224 px is one
# 7 x 7 window, not shifted), so the checkpoint's logits are the official
# ones; the downstream configs (mmseg/mmdet Swin) keep it off.
# Downstream: configs/pipelines/*_rmoe_i_upstream.py read
# work_dirs/rmoe_swin_t_in1k_intermediate/epoch_5.pth.
_base_ = ['mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py']
custom_imports = dict(imports=['rmoe_mm'], allow_failed_imports=False)

dense_checkpoint = 'checkpoints/swin_tiny_patch4_window7_224.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='RMoESwinTransformer',
        arch='tiny',
        drop_path_rate=0.2,
        out_indices=(3, ),
        official_window_rule=True,
        moe_blocks=None,
        moe_cfg=dict(num_experts=8, top_k=1),
        init_cfg=dict(
            type='Pretrained', checkpoint=dense_checkpoint, final_norm=True)),
    head=dict(
        init_cfg=dict(
            _delete_=True, type='PretrainedHead',
            checkpoint=dense_checkpoint)))

intermediate_epochs = 5
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-3,
        by_epoch=True,
        begin=0,
        end=1,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        eta_min=1e-5,
        by_epoch=True,
        begin=1,
        end=intermediate_epochs,
        convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=intermediate_epochs, val_interval=1)
custom_hooks = [
    dict(
        type='RMoEStageHook',
        by_epoch=True,
        stages=[dict(name='intermediate', begin=0, frozen=['core'])]),
    dict(type='MoEStatsHook'),
    dict(type='IterationSeedHook'),
]
