# The pipelines of Swin-T UperNet on ADE20K at full scale, for
# tools/analysis/pipeline_cost.py (and, given the data and GPUs,
# tools/analysis/compare_pipelines.py; format:
# rmoe_mm/engine/pipeline_spec.py).
#
# `cost` holds what the configs do not say. Defaults, from the recipes the
# configs follow: ImageNet-1k has 1,281,167 training images; mmpretrain's
# Swin recipe runs on 16 GPUs x 64 images (swin-tiny_16xb64_in1k.py), mmseg's
# Swin UperNet on 8 GPUs x 2 images (160k iterations). Override with
# --cfg-options stages.<stage>.cost.<key>=<value>, and the upstream schedules
# with stages.<stage>.options.train_cfg.max_epochs=<epochs>.
_in1k = dict(dataset_size=1281167, world_size=16)
_ade20k = dict(world_size=8)
_up = 'configs/upstream/'
_down = 'configs/pipelines/swin_t_upernet_ade20k_'
metrics = ['mIoU']
stages = dict(
    # upstream: the dense pretraining behind the official checkpoint (300
    # epochs) and the full MoE's pretraining from scratch (300 epochs)
    dense_pretrain=dict(
        config=_up + 'swin_t_in1k.py', shared=True, cost=_in1k),
    moe_pretrain=dict(
        config=_up + 'moe_swin_t_in1k.py', shared=True, cost=_in1k),
    # the paper's RMoE-I intermediate stage: 5 ImageNet-1k epochs, core frozen
    rmoe_intermediate=dict(
        config=_up + 'rmoe_swin_t_in1k_intermediate.py',
        init_from='dense_pretrain',
        cost=_in1k),
    # downstream: 160k iterations (+ 8k for the downstream-first-stage
    # variants)
    dense=dict(
        config=_down + 'dense.py', init_from='dense_pretrain', cost=_ade20k),
    rmoe_d=dict(
        config=_down + 'rmoe_d.py', init_from='dense_pretrain', cost=_ade20k),
    rmoe_i=dict(
        config=_down + 'rmoe_i_upstream.py',
        init_from='rmoe_intermediate',
        cost=_ade20k),
    rmoe_i_frozen_experts=dict(
        config=_down + 'rmoe_i_upstream_frozen_experts.py',
        init_from='rmoe_intermediate',
        cost=_ade20k),
    full_moe=dict(
        config=_down + 'moe_upstream.py',
        init_from='moe_pretrain',
        cost=_ade20k),
    rmoe_i_downstream=dict(
        config=_down + 'rmoe_i_downstream.py',
        init_from='dense_pretrain',
        cost=_ade20k),
    moe_downstream=dict(
        config=_down + 'moe_downstream.py',
        init_from='dense_pretrain',
        cost=_ade20k),
)
pipelines = dict(
    dense='dense',
    full_moe='full_moe',
    rmoe_d='rmoe_d',
    rmoe_i='rmoe_i',
    rmoe_i_frozen_experts='rmoe_i_frozen_experts',
    rmoe_i_downstream='rmoe_i_downstream',
    moe_downstream='moe_downstream',
)
