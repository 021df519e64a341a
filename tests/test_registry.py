"""Importing rmoe_mm makes its modules buildable from the mmseg, mmdet and
mmpretrain scopes."""
import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope, init_default_scope
from timm.layers.activations import QuickGELU as TimmQuickGELU

import rmoe_mm  # noqa: F401
from rmoe_mm.registry import HOOKS, MODELS


def rmoe_entries(registry):
    """Names of the entries that rmoe_mm put into ``registry``: its classes,
    and timm's QuickGELU, which it registers for CvT."""
    return sorted(
        name for name, cls in registry.module_dict.items()
        if cls.__module__.startswith('rmoe_mm.') or cls is TimmQuickGELU)


# Names the libraries register themselves, where their own class wins in their
# scope. mmseg's QuickGELU (clip_text_encoder) and mmpretrain's (CLIP) are the
# same x * sigmoid(1.702 x).
SHADOWED_BY_LIBRARY = {
    'mmseg': {'QuickGELU'},
    'mmdet': set(),
    'mmpretrain': {'QuickGELU'}
}
SCOPES = ['mmseg', 'mmdet', 'mmpretrain']


@pytest.mark.parametrize('scope', SCOPES)
def test_every_rmoe_model_is_found_from_scope(scope):
    names = rmoe_entries(MODELS)
    assert {'RMoEFFN', 'RMoESwinTransformer', 'CvT', 'RMoECvT'} <= set(names)
    library = __import__(f'{scope}.registry', fromlist=['MODELS'])
    own = set(library.MODELS.module_dict)
    assert own & set(names) == SHADOWED_BY_LIBRARY[scope]
    with DefaultScope.overwrite_default_scope(scope):
        for name in set(names) - own:
            assert library.MODELS.get(name) is MODELS.get(name), name


@pytest.mark.parametrize('scope', SCOPES)
def test_every_rmoe_hook_is_found_from_scope(scope):
    library = __import__(f'{scope}.registry', fromlist=['HOOKS'])
    names = rmoe_entries(HOOKS)
    assert {'RMoEStageHook', 'MoEStatsHook', 'IterationSeedHook'} <= set(names)
    with DefaultScope.overwrite_default_scope(scope):
        for name in names:
            assert library.HOOKS.get(name) is HOOKS.get(name), name


@pytest.mark.parametrize('scope', SCOPES)
def test_config_with_custom_imports_builds_rmoe_ffn(scope):
    cfg = Config(
        dict(
            default_scope=scope,
            custom_imports=dict(
                imports=['rmoe_mm'], allow_failed_imports=False),
            layer=dict(
                type='RMoEFFN',
                embed_dims=8,
                feedforward_channels=16,
                num_experts=2)))
    init_default_scope(cfg.default_scope)
    library = __import__(f'{scope}.registry', fromlist=['MODELS'])
    layer = library.MODELS.build(cfg.layer)
    assert type(layer).__name__ == 'RMoEFFN'


def test_pretrained_head_initialiser_is_found_from_mmpretrain():
    from mmpretrain.registry import WEIGHT_INITIALIZERS

    from rmoe_mm.classification import PretrainedHead
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        assert WEIGHT_INITIALIZERS.get('PretrainedHead') is PretrainedHead
