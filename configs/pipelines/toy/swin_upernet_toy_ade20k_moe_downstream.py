# Toy ADE20K, full-MoE upper bound (sparse upcycling): the dense upstream
# checkpoint converted to MoE (every expert a copy of the dense FFN plus
# small noise, new routers) and trained with everything from the start: an
# MoE "upstream" stage as long as RMoE-I's intermediate stage, then the same
# finetune schedule. Only the frozen core distinguishes it from RMoE-I, so
# this config is RMoE-I's with nothing frozen in the first stage.
_base_ = ['./swin_upernet_toy_ade20k_rmoe_i.py']

custom_hooks = [
    dict(type='RMoEStageHook', stages=[
        dict(name='upstream_moe', begin=0),
        dict(name='finetune', begin={{_base_.intermediate_iters}})]),
    dict(type='MoEStatsHook'),
    dict(type='IterationSeedHook'),
]
