# Dense CvT-13 UperNet on ADE20K, 8 GPUs x 2 images, 160k iterations: the
# non-MoE lower bound of the RMoE paper's CvT-13 segmentation result. Same
# recipe as mmseg's Swin-T UperNet config; only the backbone differs.
#
# CvT has three stages (strides 4/8/16); the backbone's extra conv token
# embedding adds the stride-32 level UperNet expects (docs/cvt.md).
# The checkpoint is the official ImageNet-1k CvT-13 (224 px); transformers'
# microsoft/cvt-13 pytorch_model.bin loads the same way (the layout is
# detected and converted on load; docs/cvt.md says where to get either).
_base_ = [
    'mmseg::_base_/models/upernet_swin.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['rmoe_mm'], allow_failed_imports=False)

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
checkpoint_file = 'checkpoints/CvT-13-224x224-IN-1k.pth'
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _delete_=True,
        type='CvT',
        arch='13',
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        extra_level='conv',
        proj_norm_cfg=dict(type='SyncBN', requires_grad=True),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[64, 192, 384, 384], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150))

# AdamW; no weight decay on norms and the cls token (the official CvT
# excludes cls tokens from weight decay too).
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys={
            'cls_token': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.),
            '.bn.': dict(decay_mult=0.),
        }))

param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=1.0,
        begin=1500,
        end=160000,
        by_epoch=False,
    )
]

# By default, models are trained on 8 GPUs with 2 images per GPU
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
