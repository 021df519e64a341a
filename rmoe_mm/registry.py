"""One registry entry visible from the mmseg and the mmdet default scope.

mmseg's and mmdet's registries (``mmseg.registry.MODELS``,
``mmdet.registry.MODELS``, ...) are children of mmengine's root registries, and
a child that misses a key searches its parents. Registering into the root is
therefore the single place that makes a class buildable from both scopes,
without keeping two copies of every entry or importing mmseg/mmdet here.
"""
from mmengine.registry import HOOKS as _ROOT_HOOKS
from mmengine.registry import MODELS as _ROOT_MODELS

#: Backbones, layers and anything built by ``MODELS.build`` in mmseg or mmdet.
MODELS = _ROOT_MODELS
#: Runner hooks for ``custom_hooks`` in mmseg or mmdet configs.
HOOKS = _ROOT_HOOKS

__all__ = ['MODELS', 'HOOKS']
