# The toy ADE20K pipelines on the hard preset (`make_toy_data.py --preset
# hard`: 34 classes of which 24 objects sharing attributes pairwise, small
# overlapping objects, three scene types, context classes; toy ImageNet with
# 26 classes), with the standard preset's configs and longer schedules:
# 1000 iterations of upstream pretraining (dense and MoE, run once), 150 of
# RMoE-I's intermediate stage and 500 of every downstream finetune. Of the
# downstream-first-stage variants, RMoE-I downstream runs 150 core-frozen
# iterations on toy ADE20K, then the same 500-iteration finetune (its LR
# schedule and stage switch shifted to match); the upcycled full MoE
# downstream is left out.
_base_ = ['./swin_upernet_toy_ade20k.py']
data = [
    dict(dataset='imagenet', preset='hard'),
    dict(dataset='ade20k', preset='hard'),
]


def _options(root, iters, **extra):
    options = {
        f'{split}_dataloader.dataset.data_root': root
        for split in ('train', 'val', 'test')
    }
    options.update({
        'train_cfg.max_iters': iters,
        'train_cfg.val_interval': iters,
        'param_scheduler.1.end': iters,  # the decay after the warm-up
        'default_hooks.checkpoint.interval': iters,
    })
    options.update(extra)
    return options


_classes = {'model.head.num_classes': 26, 'data_preprocessor.num_classes': 26}
_pretrain = _options('data/toy_imagenet_hard', 1000, **_classes)
_intermediate = _options('data/toy_imagenet_hard', 150, **_classes)
_finetune = _options('data/toy_ade20k_hard/ADEChallengeData2016', 500)
# first stage 150 iterations (warm-up 20, constant LR), then the finetune:
# warm-up 20 and linear decay to 650
_downstream_first = _options(
    'data/toy_ade20k_hard/ADEChallengeData2016', 650, **{
        'param_scheduler.1.begin': 150,
        'param_scheduler.1.end': 170,
        'param_scheduler.2.begin': 170,
        'param_scheduler.2.end': 650,
        'custom_hooks.0.stages.1.begin': 150,
    })
stages = dict(
    dense_pretrain=dict(options=_pretrain),
    moe_pretrain=dict(options=_pretrain),
    rmoe_intermediate=dict(options=_intermediate),
    dense=dict(options=_finetune),
    rmoe_d=dict(options=_finetune),
    rmoe_i=dict(options=_finetune),
    rmoe_i_frozen_experts=dict(options=_finetune),
    full_moe=dict(options=_finetune),
    rmoe_i_downstream=dict(options=_downstream_first),
)
pipelines = dict(
    _delete_=True,
    dense='dense',
    full_moe='full_moe',
    rmoe_d='rmoe_d',
    rmoe_i='rmoe_i',
    rmoe_i_frozen_experts='rmoe_i_frozen_experts',
    rmoe_i_downstream='rmoe_i_downstream',
)
