# Swin-T UperNet ADE20K, full MoE upcycled on the downstream data (a variant
# of the upper bound; the paper's, an MoE pretrained upstream, is
# swin_t_upernet_ade20k_moe_upstream.py): the dense Swin-T checkpoint
# converted to MoE (every expert a copy of the dense FFN plus small noise,
# new routers), a first stage of 8k iterations on ADE20K with everything
# training, then the dense pipeline's 160k schedule, shifted. Only the frozen
# core distinguishes it from swin_t_upernet_ade20k_rmoe_i_downstream.py.
_base_ = ['./swin_t_upernet_ade20k_rmoe_i_downstream.py']

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
