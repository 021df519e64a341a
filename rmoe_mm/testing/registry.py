"""Child registries for what only the tests register.

Children of mmengine's root registries with their own scope, so test classes
never shadow or overwrite a real entry (no ``force=True``). Any scope finds
them by their scoped name, e.g. ``dict(type='rmoe_mm_testing.ToyDataset')``.
"""
from mmengine.registry import DATASETS as ROOT_DATASETS
from mmengine.registry import HOOKS as ROOT_HOOKS
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import Registry

#: Scope of the test registries.
SCOPE = 'rmoe_mm_testing'

MODELS = Registry('model', parent=ROOT_MODELS, scope=SCOPE)
DATASETS = Registry('dataset', parent=ROOT_DATASETS, scope=SCOPE)
HOOKS = Registry('hook', parent=ROOT_HOOKS, scope=SCOPE)

__all__ = ['SCOPE', 'MODELS', 'DATASETS', 'HOOKS']
