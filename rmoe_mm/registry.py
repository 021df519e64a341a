"""One registry entry visible from the mmseg, mmdet and mmpretrain scopes.

mmseg's, mmdet's and mmpretrain's registries (``mmseg.registry.MODELS``,
``mmdet.registry.MODELS``, ...) are children of mmengine's root registries, and
a child that misses a key searches its parents. Registering into the root is
therefore the single place that makes a class buildable from every scope,
without keeping copies of every entry or importing mmseg/mmdet here.
"""
from mmengine.registry import HOOKS as _ROOT_HOOKS
from mmengine.registry import MODELS as _ROOT_MODELS
from mmengine.registry import WEIGHT_INITIALIZERS as _ROOT_WEIGHT_INITIALIZERS

#: Backbones, layers and anything built by ``MODELS.build`` in mmseg or mmdet.
MODELS = _ROOT_MODELS
#: Runner hooks for ``custom_hooks`` in mmseg or mmdet configs.
HOOKS = _ROOT_HOOKS
#: Weight initialisers for ``init_cfg=dict(type=...)``, in any scope.
WEIGHT_INITIALIZERS = _ROOT_WEIGHT_INITIALIZERS

__all__ = ['MODELS', 'HOOKS', 'WEIGHT_INITIALIZERS']
