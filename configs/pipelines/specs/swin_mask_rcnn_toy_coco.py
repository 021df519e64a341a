# The pipelines of the toy COCO task (Swin Mask R-CNN), as training runs for
# tools/analysis/compare_pipelines.py and tools/analysis/pipeline_cost.py:
# the upstream stages of the toy ADE20K spec (toy classifiers on toy
# ImageNet, whose classes include the toy COCO objects), then the toy COCO
# finetunes. Metrics: box and mask AP.
_base_ = ['./swin_upernet_toy_ade20k.py']
data = [
    dict(dataset='imagenet', preset='standard'),
    dict(dataset='coco', preset='standard'),
]
metrics = ['coco/bbox_mAP', 'coco/segm_mAP']
_down = 'configs/pipelines/toy/swin_mask_rcnn_toy_coco_'
stages = dict(
    dense=dict(config=_down + 'dense.py'),
    rmoe_d=dict(config=_down + 'rmoe_d.py'),
    rmoe_i=dict(config=_down + 'rmoe_i_upstream.py'),
    rmoe_i_frozen_experts=dict(config=_down +
                               'rmoe_i_upstream_frozen_experts.py'),
    full_moe=dict(config=_down + 'moe_upstream.py'),
    rmoe_i_downstream=dict(config=_down + 'rmoe_i_downstream.py'),
    moe_downstream=dict(config=_down + 'moe_downstream.py'),
)
