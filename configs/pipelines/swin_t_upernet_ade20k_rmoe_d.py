# Swin-T UperNet ADE20K, RMoE-D: the dense Swin-T checkpoint converted to RMoE
# (odd blocks of stages 3-4, 8 experts, top-1) and finetuned on ADE20K with
# everything training, on the dense pipeline's 160k schedule.
_base_ = ['../rmoe_swin_t_upernet_ade20k.py']
custom_hooks = [
    dict(type='RMoEStageHook', stages=[dict(name='finetune', begin=0)]),
    dict(type='MoEStatsHook'),
    dict(type='IterationSeedHook'),
]
