# CvT-13 UperNet ADE20K, RMoE-I as in the paper: the RMoE CvT-13 classifier
# of the upstream intermediate stage (configs/upstream/
# rmoe_cvt13_in1k_intermediate.py: the official CvT-13, then 5 ImageNet-1k
# epochs with the core frozen) finetuned on ADE20K with everything training,
# on the dense CvT-13 UperNet's 160k schedule
# (configs/cvt13_upernet_ade20k.py).
# Its backbone (cores, residuals, routers, cls token, last norm) loads from
# the whole-classifier checkpoint; the classification head is left out.
_base_ = ['../rmoe_cvt13_upernet_ade20k.py']
intermediate_checkpoint = \
    'work_dirs/rmoe_cvt13_in1k_intermediate/epoch_5.pth'
model = dict(
    backbone=dict(
        init_cfg=dict(
            checkpoint=intermediate_checkpoint,
            prefix='backbone.',
            strict=True,  # all but the dense-prediction layers and the head
            allowed_missing=['norm0.', 'norm1.', 'extra_embed.'],
            allowed_unused=['head.'])))
custom_hooks = [
    dict(type='RMoEStageHook', stages=[dict(name='finetune', begin=0)]),
    dict(type='MoEStatsHook'),
    dict(type='IterationSeedHook'),
]
