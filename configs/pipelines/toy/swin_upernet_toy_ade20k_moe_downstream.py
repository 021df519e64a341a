# Toy ADE20K, full MoE upcycled on the downstream data (a variant of the
# upper bound; the paper's is swin_upernet_toy_ade20k_moe_upstream.py): the
# dense toy classifier converted to MoE (every expert a copy of the dense FFN
# plus small noise, new routers) and trained with everything from the start:
# a first stage as long as RMoE-I-downstream's intermediate stage, then the
# same finetune schedule. Only the frozen core distinguishes it from
# swin_upernet_toy_ade20k_rmoe_i_downstream.py.
_base_ = ['./swin_upernet_toy_ade20k_rmoe_i_downstream.py']

custom_hooks = [
    dict(
        type='RMoEStageHook',
        stages=[
            dict(name='upstream_moe', begin=0),
            dict(name='finetune', begin={{_base_.intermediate_iters}})
        ]),
    dict(type='MoEStatsHook'),
    dict(type='IterationSeedHook'),
]
