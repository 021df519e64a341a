# The toy ADE20K pipelines on the hard preset (`make_toy_data.py --preset
# hard`: 40 classes, small overlapping objects, context classes; toy
# ImageNet with 32 classes), with the standard preset's configs and
# schedules: only the data and the classifier's class count change.
_base_ = ['./swin_upernet_toy_ade20k.py']
data = [
    dict(dataset='imagenet', preset='hard'),
    dict(dataset='ade20k', preset='hard'),
]
_imagenet = {
    f'{split}_dataloader.dataset.data_root': 'data/toy_imagenet_hard'
    for split in ('train', 'val', 'test')
}
_imagenet.update({
    'model.head.num_classes': 32,
    'data_preprocessor.num_classes': 32
})
_ade20k = {
    f'{split}_dataloader.dataset.data_root':
    'data/toy_ade20k_hard/ADEChallengeData2016'
    for split in ('train', 'val', 'test')
}
stages = dict(
    dense_pretrain=dict(options=_imagenet),
    moe_pretrain=dict(options=_imagenet),
    rmoe_intermediate=dict(options=_imagenet),
    dense=dict(options=_ade20k),
    rmoe_d=dict(options=_ade20k),
    rmoe_i=dict(options=_ade20k),
    rmoe_i_frozen_experts=dict(options=_ade20k),
    full_moe=dict(options=_ade20k),
    rmoe_i_downstream=dict(options=_ade20k),
    moe_downstream=dict(options=_ade20k),
)
