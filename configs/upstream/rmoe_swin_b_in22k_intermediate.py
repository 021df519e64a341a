# RMoE-I's intermediate stage for Swin-B (384 px, window 12) on
# ImageNet-22k, the data of the official Swin-B 22k checkpoint that
# configs/rmoe_swin_b_upernet_ade20k.py starts from. As
# rmoe_swin_t_in1k_intermediate.py, but on mmpretrain's ImageNet21k dataset
# (data/imagenet21k, meta/train.txt) at 384 px, without a validation split.
#
# Length: `intermediate_epochs` = 1, i.e. 1 / 90 = 1.1% of the images of
# the official 22k pretraining (90 epochs of 14.2M images): the same budget
# reasoning as for ImageNet-1k (a few % of the dense schedule at most).
#
# The head loads only if the class count is the checkpoint's: 21841 for the
# official 22k files (mmpretrain's ImageNet21k lists 21842 classes; its
# labels must be in the checkpoint's class order to reuse the head).
_base_ = ['./rmoe_swin_t_in1k_intermediate.py']
dense_checkpoint = 'checkpoints/swin_base_patch4_window12_384_22k.pth'
num_classes = 21841
model = dict(
    backbone=dict(
        arch='base-w12',
        drop_path_rate=0.2,
        init_cfg=dict(checkpoint=dense_checkpoint)),
    head=dict(
        num_classes=num_classes,
        in_channels=1024,
        init_cfg=dict(checkpoint=dense_checkpoint)))
data_preprocessor = dict(num_classes=num_classes)
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='ImageNet21k',
        data_root='data/imagenet21k',
        split='train',
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(
                type='RandomResizedCrop',
                scale=384,
                backend='pillow',
                interpolation='bicubic'),
            dict(type='RandomFlip', prob=0.5, direction='horizontal'),
            dict(type='PackInputs'),
        ]))
val_dataloader = None
val_evaluator = None
val_cfg = None
test_dataloader = None
test_evaluator = None
test_cfg = None
intermediate_epochs = 1
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=1000),
    dict(
        type='CosineAnnealingLR',
        eta_min=1e-5,
        by_epoch=True,
        begin=0,
        end=intermediate_epochs,
        convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=intermediate_epochs, val_interval=1000)
