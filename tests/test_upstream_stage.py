"""The paper's RMoE-I: the upstream intermediate stage and its hand-over.

1. The toy intermediate stage (configs/upstream/toy/
   rmoe_swin_toy_imagenet_intermediate.py) trains through tools/train.py
   from a dense toy classifier synthesised here: the backbone core stays
   bit-identical to the dense checkpoint, residuals, routers and the head
   change.
2. The downstream RMoE-I configs load the intermediate stage's whole
   classifier checkpoint: every core, residual and router tensor of it
   loads, only the classification head is left out, and the only model
   tensors it lacks are the dense-prediction layers a classifier has not
   (Swin's output norms 0-2; CvT's output norms 0-1 and its extra level).
   Checked for the toy chain and for the full-size Swin-T and CvT-13 config
   pairs (classifiers built from the upstream configs, no weights needed),
   through the configs' strict ``init_cfg`` (only these left out), which
   refuses a dense checkpoint.
"""
import re

import pytest
import torch
from mmengine.config import Config

import rmoe_mm  # noqa: F401  registers the models, hooks and initialisers
from rmoe_mm.checkpoint import load_checkpoint_file
from rmoe_mm.testing import CONFIG_DIR, build_model, run_tool

TOY_UPSTREAM = CONFIG_DIR / 'upstream' / 'toy'
_MOE_KEY = re.compile(r'(^|\.)(router|residual)\.')


def is_moe_key(key):
    """A router or expert-residual tensor of an RMoE FFN."""
    return _MOE_KEY.search(key) is not None


def save(model, path):
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)
    return path


@pytest.fixture(scope='module')
def toy_imagenet_root(tmp_path_factory, toy_data_tool):
    return toy_data_tool.make_toy_imagenet(
        tmp_path_factory.mktemp('toy_data'),
        num_train=16,
        num_val=16,
        size=64,
        seed=0)


@pytest.fixture(scope='module')
def intermediate_run(tmp_path_factory, toy_imagenet_root):
    """Dense toy classifier checkpoint and the intermediate stage's one."""
    tmp = tmp_path_factory.mktemp('upstream')
    torch.manual_seed(0)
    dense = build_model(Config.fromfile(TOY_UPSTREAM / 'swin_toy_imagenet.py'))
    dense.init_weights()
    dense_path = save(dense, tmp / 'dense_cls.pth')
    work_dir = tmp / 'intermediate'
    data = [
        f'{s}_dataloader.dataset.data_root={toy_imagenet_root}'
        for s in ('train', 'val', 'test')
    ]
    run_tool('tools/train.py',
             TOY_UPSTREAM / 'rmoe_swin_toy_imagenet_intermediate.py',
             '--work-dir', work_dir, '--cfg-options', *data,
             f'model.backbone.init_cfg.checkpoint={dense_path}',
             f'model.head.init_cfg.checkpoint={dense_path}',
             'train_cfg.max_iters=3', 'train_cfg.val_interval=100',
             'default_hooks.checkpoint.interval=1',
             'default_hooks.checkpoint.max_keep_ckpts=-1',
             'model.backbone.moe_cfg.residual_std=0.',
             'train_dataloader.batch_size=4')
    return dense_path, work_dir / 'iter_3.pth'


def test_intermediate_stage_freezes_the_core_and_trains_residuals_routers(
        intermediate_run):
    dense_path, inter_path = intermediate_run
    dense = load_checkpoint_file(dense_path)['state_dict']
    inter = load_checkpoint_file(inter_path)['state_dict']
    backbone = [
        k for k in inter
        if k.startswith('backbone.') and 'relative_position_index' not in k
    ]
    core = [k for k in backbone if not is_moe_key(k)]
    moe = [k for k in backbone if is_moe_key(k)]
    assert set(core) <= set(dense) and len(core) > 100
    assert [k for k in core if not torch.equal(dense[k], inter[k])] == []
    residuals = [k for k in moe if '.residual.' in k and k.endswith('weight')]
    routers = [k for k in moe if '.router.' in k]
    assert residuals and routers
    assert all(inter[k].abs().sum() > 0 for k in residuals)  # from zero
    first = load_checkpoint_file(inter_path.parent /
                                 'iter_1.pth')['state_dict']
    assert all(not torch.equal(first[k], inter[k])
               for k in residuals + routers + ['head.fc.weight'])


def load_report(downstream_config, checkpoint, **options):
    cfg = Config.fromfile(downstream_config)
    cfg.merge_from_dict(options)
    model = build_model(cfg)
    init = cfg.model.backbone.init_cfg
    report = model.backbone.load_pretrained(
        str(checkpoint),
        prefix=init.prefix,
        final_norm=init.get('final_norm', False))
    # the config's strict load: it names what may be left out
    assert init.strict
    report.enforce_complete(init.allowed_missing, init.allowed_unused)
    return model, report


def assert_whole_backbone_loads(report, checkpoint, new_layers):
    ckpt = load_checkpoint_file(checkpoint)['state_dict']
    backbone = {
        k[len('backbone.'):]
        for k in ckpt
        if k.startswith('backbone.') and 'relative_position_index' not in k
    }
    assert set(report.loaded) == backbone
    assert any(is_moe_key(k) for k in report.loaded)
    assert report.initialised == []  # no residual or router left at init
    assert sorted(report.ignored) == sorted(
        k for k in ckpt if not k.startswith('backbone.'))
    assert all(k.startswith('head.') for k in report.ignored)
    assert {k.split('.')[0] for k in report.missing} <= set(new_layers)


def test_toy_downstream_rmoe_i_loads_the_intermediate_checkpoint(
        intermediate_run):
    _, inter_path = intermediate_run
    model, report = load_report(
        CONFIG_DIR / 'pipelines' / 'toy' /
        'swin_upernet_toy_ade20k_rmoe_i_upstream.py', inter_path)
    assert_whole_backbone_loads(report, inter_path,
                                {'norm0', 'norm1', 'norm2'})
    ckpt = load_checkpoint_file(inter_path)['state_dict']
    own = model.backbone.state_dict()
    assert all(
        torch.equal(own[k], ckpt['backbone.' + k]) for k in report.loaded)


def test_strict_downstream_load_refuses_a_dense_classifier(tmp_path):
    """The RMoE-I configs' strict init_cfg: a dense checkpoint (routers and
    residuals left at their init) is an error, not a report line."""
    from rmoe_mm.checkpoint.fit import CheckpointMismatchError
    cfg = Config.fromfile(TOY_UPSTREAM / 'swin_toy_imagenet.py')
    path = save(build_model(cfg), tmp_path / 'dense.pth')
    cfg = Config.fromfile(CONFIG_DIR / 'pipelines' / 'toy' /
                          'swin_upernet_toy_ade20k_rmoe_i_upstream.py')
    cfg.model.backbone.init_cfg.checkpoint = str(path)
    model = build_model(cfg)
    with pytest.raises(CheckpointMismatchError, match='router / residual'):
        model.backbone.init_weights()


@pytest.mark.parametrize('upstream,downstream,new_layers', [
    ('rmoe_swin_t_in1k_intermediate.py',
     'swin_t_upernet_ade20k_rmoe_i_upstream.py', {'norm0', 'norm1', 'norm2'}),
    ('rmoe_cvt13_in1k_intermediate.py',
     'cvt13_upernet_ade20k_rmoe_i_upstream.py',
     {'norm0', 'norm1', 'extra_embed'}),
    ('rmoe_swin_t_in1k_intermediate.py',
     'swin_t_mask_rcnn_coco_rmoe_i_upstream.py', {'norm0', 'norm1', 'norm2'}),
    ('rmoe_cvt13_in1k_intermediate.py',
     'cvt13_mask_rcnn_coco_rmoe_i_upstream.py',
     {'norm0', 'norm1', 'extra_embed'}),
])
def test_full_size_downstream_loads_its_intermediate_classifier(
        tmp_path, upstream, downstream, new_layers):
    cfg = Config.fromfile(CONFIG_DIR / 'upstream' / upstream)
    cfg.model.backbone.init_cfg = None  # the official file is not needed
    cfg.model.head.init_cfg = None
    path = save(build_model(cfg), tmp_path / 'intermediate.pth')
    _, report = load_report(CONFIG_DIR / 'pipelines' / downstream, path)
    assert_whole_backbone_loads(report, path, new_layers)


def test_tools_test_evaluates_the_classifier_and_dumps_predictions(
        intermediate_run, toy_imagenet_root, tmp_path):
    import pickle
    _, inter_path = intermediate_run
    out = tmp_path / 'preds.pkl'
    proc = run_tool('tools/test.py',
                    TOY_UPSTREAM / 'rmoe_swin_toy_imagenet_intermediate.py',
                    inter_path, '--work-dir', tmp_path, '--out', out,
                    '--cfg-options',
                    f'test_dataloader.dataset.data_root={toy_imagenet_root}')
    assert 'accuracy/top1' in proc.stdout + proc.stderr
    with open(out, 'rb') as f:  # written by this test
        predictions = pickle.load(f)
    assert len(predictions) == 16
    assert predictions[0]['pred_score'].shape == (16, )
