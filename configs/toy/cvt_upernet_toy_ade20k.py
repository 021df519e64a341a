# Dense toy CvT UperNet on toy ADE20K: the dense toy Swin UperNet
# (swin_upernet_toy_ade20k.py) with a small CvT (widths 32/64/128, depths
# 1/2/2) in place of Swin; the extra conv level gives UperNet its 4th input.
_base_ = ['./swin_upernet_toy_ade20k.py']

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
    decode_head=dict(in_channels=[32, 64, 128, 128]),
    auxiliary_head=dict(in_channels=128))
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={
        'cls_token': dict(decay_mult=0.),
        '.bn.': dict(decay_mult=0.),
    }))
