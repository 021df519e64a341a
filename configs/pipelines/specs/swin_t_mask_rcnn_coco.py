# The pipelines of Swin-T Mask R-CNN on COCO at full scale, for
# tools/analysis/pipeline_cost.py: the upstream stages of
# swin_t_upernet_ade20k.py, and mmdet's Swin-T Mask R-CNN 1x downstream
# (12 epochs of COCO train2017, 118,287 images, 8 GPUs x 2 images; 13 for
# the downstream-first-stage variants).
_base_ = ['./swin_t_upernet_ade20k.py']
metrics = ['coco/bbox_mAP', 'coco/segm_mAP']
_coco = dict(dataset_size=118287, world_size=8)
_down = 'configs/pipelines/swin_t_mask_rcnn_coco_'
stages = dict(
    dense=dict(config=_down + 'dense.py', cost=_coco),
    rmoe_d=dict(config=_down + 'rmoe_d.py', cost=_coco),
    rmoe_i=dict(config=_down + 'rmoe_i_upstream.py', cost=_coco),
    rmoe_i_frozen_experts=dict(
        config=_down + 'rmoe_i_upstream_frozen_experts.py', cost=_coco),
    full_moe=dict(config=_down + 'moe_upstream.py', cost=_coco),
    rmoe_i_downstream=dict(config=_down + 'rmoe_i_downstream.py', cost=_coco),
    moe_downstream=dict(config=_down + 'moe_downstream.py', cost=_coco),
)
