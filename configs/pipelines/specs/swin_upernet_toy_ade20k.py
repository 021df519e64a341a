# The pipelines of the toy ADE20K task (Swin UperNet), as training runs for
# tools/analysis/compare_pipelines.py (format: rmoe_mm/engine/pipeline_spec.py)
# and tools/analysis/pipeline_cost.py. Every pipeline starts from a toy
# classifier trained on toy ImageNet, as the paper's start from ImageNet
# checkpoints; `shared` stages run once for all seeds.
data = [
    dict(dataset='imagenet', preset='standard'),
    dict(dataset='ade20k', preset='standard'),
]
metrics = ['mIoU']
_up = 'configs/upstream/toy/'
_down = 'configs/pipelines/toy/swin_upernet_toy_ade20k_'
stages = dict(
    # upstream: the dense "ImageNet checkpoint" and the MoE one from scratch
    dense_pretrain=dict(config=_up + 'swin_toy_imagenet.py', shared=True),
    moe_pretrain=dict(config=_up + 'moe_swin_toy_imagenet.py', shared=True),
    # the paper's RMoE-I intermediate stage, on the upstream data
    rmoe_intermediate=dict(
        config=_up + 'rmoe_swin_toy_imagenet_intermediate.py',
        init_from='dense_pretrain'),
    # downstream finetunes
    dense=dict(config=_down + 'dense.py', init_from='dense_pretrain'),
    rmoe_d=dict(config=_down + 'rmoe_d.py', init_from='dense_pretrain'),
    rmoe_i=dict(
        config=_down + 'rmoe_i_upstream.py', init_from='rmoe_intermediate'),
    rmoe_i_frozen_experts=dict(
        config=_down + 'rmoe_i_upstream_frozen_experts.py',
        init_from='rmoe_intermediate'),
    full_moe=dict(config=_down + 'moe_upstream.py', init_from='moe_pretrain'),
    # variants with their first stage on the downstream data
    rmoe_i_downstream=dict(
        config=_down + 'rmoe_i_downstream.py', init_from='dense_pretrain'),
    moe_downstream=dict(
        config=_down + 'moe_downstream.py', init_from='dense_pretrain'),
)
# pipeline -> its last stage
pipelines = dict(
    dense='dense',
    full_moe='full_moe',
    rmoe_d='rmoe_d',
    rmoe_i='rmoe_i',
    rmoe_i_frozen_experts='rmoe_i_frozen_experts',
    rmoe_i_downstream='rmoe_i_downstream',
    moe_downstream='moe_downstream',
)
