"""The downstream pipeline configs (configs/pipelines): they parse, their hooks
build, their stages agree with their schedules, and the toy RMoE-I-downstream
pipeline trains through tools/train.py as the stage hook promises.

The toy run starts from a dense toy checkpoint synthesised here (the dense
toy model's initial weights), with zero residuals, freezes the core for
iterations 0-1 and trains everything at iterations 2-3. Reference: the
checkpoints it saves at iterations 2 and 4, compared bit for bit. (The
paper's RMoE-I, with its intermediate stage upstream, is tested in
tests/test_upstream_stage.py.)
"""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import HOOKS, MODELS, init_default_scope

import rmoe_mm  # noqa: F401  registers the hooks, checkpoint allow-list
from rmoe_mm.checkpoint import load_checkpoint_file
from rmoe_mm.testing import REPO_ROOT, run_tool

PIPELINES = REPO_ROOT / 'configs' / 'pipelines'
CONFIGS = sorted(p for p in PIPELINES.rglob('*.py') if 'specs' not in p.parts)
# kind -> the frozen roles of each stage of its RMoEStageHook (None: dense)
KINDS = {
    'dense': None,
    'rmoe_d': [[]],
    'rmoe_i_upstream': [[]],
    'rmoe_i_upstream_frozen_experts': [['residual', 'router']],
    'moe_upstream': [[]],
    'rmoe_i_downstream': [['core'], []],
    'moe_downstream': [[], []],
}


def kind_of(path):
    return max((k for k in KINDS if path.stem.endswith('_' + k)), key=len)


def test_every_swin_task_has_every_pipeline():
    names = {p.stem for p in CONFIGS}
    for task in ('swin_t_upernet_ade20k', 'swin_t_mask_rcnn_coco',
                 'swin_upernet_toy_ade20k', 'swin_mask_rcnn_toy_coco'):
        assert {f'{task}_{kind}' for kind in KINDS} <= names, task
    assert {
        'cvt13_upernet_ade20k_rmoe_i_upstream',
        'cvt13_mask_rcnn_coco_rmoe_i_upstream'
    } <= names


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_pipeline_config_parses_and_its_hooks_build(path):
    cfg = Config.fromfile(path)
    hooks = [HOOKS.build(dict(h)) for h in cfg.get('custom_hooks', [])]
    names = [type(h).__name__ for h in hooks]
    assert 'IterationSeedHook' in names
    kind = kind_of(path)
    if kind == 'dense':
        assert 'RMoEStageHook' not in names
        return
    assert cfg.model.backbone.type in ('RMoESwinTransformer', 'RMoECvT')
    stage_hook = hooks[names.index('RMoEStageHook')]
    assert 'MoEStatsHook' in names
    assert [sorted(s.frozen) for s in stage_hook.stages] == KINDS[kind]


# kind -> what its starting checkpoint is the output of
UPSTREAM_RUN = {
    'rmoe_i_upstream': 'intermediate',
    'rmoe_i_upstream_frozen_experts': 'intermediate',
    'moe_upstream': 'moe_',
}


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_pipelines_start_from_their_upstream_checkpoint(path):
    """RMoE-I (upstream) and its frozen-experts variant start from the RMoE
    classifier of the intermediate stage, full MoE (upstream) from the MoE
    classifier; the others from the dense model: the official checkpoint at
    full scale, the dense toy classifier for the toy. Classifier checkpoints
    are read by their backbone (prefix ``backbone.``)."""
    cfg = Config.fromfile(path)
    init = cfg.model.backbone.init_cfg
    kind = kind_of(path)
    if kind in UPSTREAM_RUN:
        assert UPSTREAM_RUN[kind] in init.checkpoint
    else:
        assert 'intermediate' not in init.checkpoint
    if path.parent.name == 'toy' or kind in UPSTREAM_RUN:
        assert init.checkpoint.startswith('work_dirs/')
        assert init.prefix == 'backbone.'
    else:
        assert init.checkpoint.startswith('checkpoints/')


@pytest.mark.parametrize(
    'path', [p for p in CONFIGS if p.stem.endswith('_downstream')],
    ids=lambda p: p.stem)
def test_finetune_stage_starts_with_its_own_warmup(path):
    cfg = Config.fromfile(path)
    hook = [h for h in cfg.custom_hooks if h['type'] == 'RMoEStageHook'][0]
    switch = hook['stages'][1]['begin']
    warmups = [s for s in cfg.param_scheduler if s['type'] == 'LinearLR']
    assert [w['begin'] for w in warmups] == [0, switch]
    assert warmups[1].get('by_epoch', True) == hook.get('by_epoch', False)


@pytest.fixture(scope='module')
def dense_toy_checkpoint(tmp_path_factory):
    cfg = Config.fromfile(REPO_ROOT / 'configs/toy/swin_upernet_toy_ade20k.py')
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    path = tmp_path_factory.mktemp('dense') / 'dense.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)
    return path


@pytest.mark.slow
def test_toy_rmoe_i_downstream_freezes_the_swin_core_then_trains_it(
        dense_toy_checkpoint, toy_ade20k_options, tmp_path):
    run_tool(
        'tools/train.py',
        PIPELINES / 'toy' / 'swin_upernet_toy_ade20k_rmoe_i_downstream.py',
        '--work-dir', tmp_path, '--cfg-options', *toy_ade20k_options,
        f'model.backbone.init_cfg.checkpoint={dense_toy_checkpoint}',
        'train_cfg.max_iters=4', 'train_cfg.val_interval=100',
        'param_scheduler=[]', 'custom_hooks.0.stages.1.begin=2',
        'default_hooks.checkpoint.interval=2',
        'default_hooks.checkpoint.max_keep_ckpts=-1',
        'train_dataloader.batch_size=2',
        'model.backbone.moe_cfg.residual_std=0.')
    dense = load_checkpoint_file(dense_toy_checkpoint)['state_dict']
    at_switch, final = (
        load_checkpoint_file(Path(tmp_path) / f'iter_{i}.pth')['state_dict']
        for i in (2, 4))
    core = [
        k for k in dense if k.startswith('backbone.') and not k.endswith(
            ('running_mean', 'running_var',
             'num_batches_tracked')) and 'relative_position_index' not in k
    ]
    residual = [k for k in final if '.residual.' in k]
    heads = [
        k for k in dense
        if k.startswith(('decode_head.',
                         'auxiliary_head.')) and k.endswith('.weight')
    ]
    assert core and residual and heads
    assert [k for k in core if not torch.equal(dense[k], at_switch[k])] == []
    assert all(at_switch[k].abs().sum() > 0 for k in residual)  # from zero
    assert all(not torch.equal(dense[k], at_switch[k]) for k in heads)
    assert [k for k in core if torch.equal(at_switch[k], final[k])] == []
