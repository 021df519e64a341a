# Dense toy CvT Mask R-CNN on toy COCO: the dense toy Swin Mask R-CNN
# (swin_mask_rcnn_toy_coco.py) with a small CvT (widths 32/64/128, depths
# 1/2/2) in place of Swin; the extra conv level gives the FPN its 4th input.
_base_ = ['./swin_mask_rcnn_toy_coco.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='CvT',
        arch=dict(
            embed_dims=(32, 64, 128), depths=(1, 2, 2), num_heads=(1, 2, 4)),
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        extra_level='conv',
        init_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 128]))
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={
        'cls_token': dict(decay_mult=0.),
        '.bn.': dict(decay_mult=0.),
    }))
