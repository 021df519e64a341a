# The whole integration with mmseg: take any mmseg Swin config and change the
# backbone type (plus custom_imports). Everything else -- decode heads,
# schedule, data, the mmseg-converted pretrained checkpoint -- is the dense
# config's; the dense FFNs become the cores of the RMoE FFNs at load time.
_base_ = [
    'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'  # noqa
]
custom_imports = dict(imports=['rmoe_mm'], allow_failed_imports=False)
model = dict(backbone=dict(type='RMoESwinTransformer'))
