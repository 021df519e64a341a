# Swin-T UperNet ADE20K, full-MoE upper bound (sparse upcycling): the dense
# Swin-T checkpoint converted to MoE (every expert a copy of the dense FFN plus
# small noise, new routers), an MoE "upstream" stage of 8k iterations with
# everything training, then the dense pipeline's 160k schedule, shifted.
# Only the frozen core distinguishes it from RMoE-I, so this config is
# RMoE-I's with nothing frozen in the first stage.
_base_ = ['./swin_t_upernet_ade20k_rmoe_i.py']

custom_hooks = [
    dict(type='RMoEStageHook', stages=[
        dict(name='upstream_moe', begin=0),
        dict(name='finetune', begin={{_base_.intermediate_iters}})]),
    dict(type='MoEStatsHook'),
    dict(type='IterationSeedHook'),
]
