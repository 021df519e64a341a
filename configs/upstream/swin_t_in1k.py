# The dense Swin-T ImageNet-1k pretraining of the official checkpoint, as
# mmpretrain's recipe (swin-tiny_16xb64_in1k.py: 300 epochs, 16 GPUs x 64)
# with this project's backbone (RMoESwinTransformer without MoE blocks, the
# official window rule on). The pipelines start from the official file
# instead of running it; tools/analysis/pipeline_cost.py prices it as the
# upstream stage of every pipeline that starts from the dense checkpoint.
_base_ = ['mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py']
custom_imports = dict(imports=['rmoe_mm'], allow_failed_imports=False)
model = dict(
    backbone=dict(
        _delete_=True,
        type='RMoESwinTransformer',
        arch='tiny',
        drop_path_rate=0.2,
        out_indices=(3, ),
        official_window_rule=True,
        moe_blocks='none'))
custom_hooks = [dict(type='IterationSeedHook')]
