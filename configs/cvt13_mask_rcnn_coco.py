# Dense CvT-13 Mask R-CNN (FPN) on COCO, 1x schedule, 8 GPUs x 2 images: the
# non-MoE lower bound of the RMoE paper's CvT-13 detection result. Same
# recipe as mmdet's Swin-T Mask R-CNN 1x config; only the backbone differs.
#
# CvT has three stages (strides 4/8/16); the backbone's extra conv token
# embedding adds the stride-32 level the FPN expects (docs/cvt.md).
# The checkpoint is the official ImageNet-1k CvT-13 (224 px); transformers'
# microsoft/cvt-13 pytorch_model.bin loads the same way (the layout is
# detected and converted on load; docs/cvt.md says where to get either).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['rmoe_mm'], allow_failed_imports=False)

pretrained = 'checkpoints/CvT-13-224x224-IN-1k.pth'
model = dict(
    type='MaskRCNN',
    backbone=dict(
        _delete_=True,
        type='CvT',
        arch='13',
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        extra_level='conv',
        proj_norm_cfg=dict(type='SyncBN', requires_grad=True),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 192, 384, 384]))

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)

param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
        end=1000),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[8, 11],
        gamma=0.1)
]

optim_wrapper = dict(
    type='OptimWrapper',
    paramwise_cfg=dict(
        custom_keys={
            'cls_token': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.),
            '.bn.': dict(decay_mult=0.),
        }),
    optimizer=dict(
        _delete_=True,
        type='AdamW',
        lr=0.0001,
        betas=(0.9, 0.999),
        weight_decay=0.05))
