# The whole integration with mmdet: take any mmdet Swin config and change the
# backbone type (plus custom_imports). The official Swin checkpoint of the
# dense config (convert_weights=True) loads as is: the layout is detected.
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py']
custom_imports = dict(imports=['rmoe_mm'], allow_failed_imports=False)
model = dict(backbone=dict(type='RMoESwinTransformer'))
