"""The tools' check of data and checkpoint paths before the runner is built.

Reference: the paths mmengine's datasets would open (``data_root`` joined
with ``ann_file`` and ``data_prefix``, as ``BaseDataset`` joins them) and
the checkpoints the run loads; run from an empty directory, the full configs
miss them all, and the toy configs with generated data miss none.
"""
import json

import pytest
from mmengine.config import Config

from rmoe_mm.engine.preflight import (PreflightError, check_config_paths,
                                      preflight)
from rmoe_mm.testing import REPO_ROOT

FULL = {
    'configs/rmoe_swin_t_upernet_ade20k.py':
    ('data/ade/ADEChallengeData2016', 'docs/swin.md',
     'configs/toy/rmoe_swin_upernet_toy_ade20k.py'),
    'configs/rmoe_swin_t_mask_rcnn_coco.py':
    ('data/coco/', 'docs/swin.md',
     'configs/toy/rmoe_swin_mask_rcnn_toy_coco.py'),
    'configs/rmoe_cvt13_upernet_ade20k.py':
    ('data/ade/ADEChallengeData2016', 'docs/cvt.md',
     'configs/toy/rmoe_cvt_upernet_toy_ade20k.py'),
    'configs/cvt13_mask_rcnn_coco.py':
    ('data/coco/', 'docs/cvt.md', 'configs/toy/cvt_mask_rcnn_toy_coco.py'),
}


def config(name, **options):
    cfg = Config.fromfile(str(REPO_ROOT / name))
    cfg.merge_from_dict(options)
    return cfg


@pytest.mark.parametrize('name', sorted(FULL))
def test_fresh_machine_gets_one_message_per_missing_path(
        name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data_root, docs, toy = FULL[name]
    cfg = config(name)
    missing = check_config_paths(cfg, 'train')
    assert [m.path for m in missing
            ] == [data_root, cfg.model.backbone.init_cfg.checkpoint]
    with pytest.raises(PreflightError) as info:
        preflight(cfg, 'train', name)
    message = str(info.value)
    assert f'{name} needs 2 paths that are missing' in message
    for text in ('docs/datasets.md', docs, toy, '--cfg-options '
                 'model.backbone.init_cfg.checkpoint=PATH'):
        assert text in message, message
    assert message.count('\n') < 15


def test_test_mode_checks_the_test_data_and_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config(
        'configs/rmoe_swin_t_upernet_ade20k.py',
        load_from='work_dirs/x/iter_9.pth')
    missing = check_config_paths(cfg, 'test')
    assert [(m.what.split(' (')[0], m.path) for m in missing
            ] == [('ADE20K data root', 'data/ade/ADEChallengeData2016'),
                  ('checkpoint to test', 'work_dirs/x/iter_9.pth')]


def test_toy_config_with_its_data_passes(toy_ade20k_options, toy_coco_options):
    for name, options in (('configs/toy/rmoe_swin_upernet_toy_ade20k.py',
                           toy_ade20k_options),
                          ('configs/toy/rmoe_cvt_mask_rcnn_toy_coco.py',
                           toy_coco_options)):
        cfg = config(name, **dict(o.split('=', 1) for o in options))
        assert check_config_paths(cfg, 'train') == []
        assert check_config_paths(cfg, 'test') == []


def test_toy_config_without_data_says_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = 'configs/toy/rmoe_swin_upernet_toy_ade20k.py'
    with pytest.raises(PreflightError) as info:
        preflight(config(name), 'train', name)
    assert 'python tools/misc/make_toy_data.py ade20k --out data' in str(
        info.value)
    assert 'runs without it' not in str(info.value)


def test_empty_image_directory_is_reported(tmp_path):
    root = tmp_path / 'ade'
    for sub in ('images/training', 'annotations/training'):
        (root / sub).mkdir(parents=True)
    cfg = config(
        'configs/toy/rmoe_swin_upernet_toy_ade20k.py', **{
            'train_dataloader.dataset.data_root': str(root),
            'val_cfg': None
        })
    missing = check_config_paths(cfg, 'train')
    assert [(m.path, m.problem) for m in missing
            ] == [(str(root / 'images/training'), 'is empty'),
                  (str(root / 'annotations/training'), 'is empty')]


def test_coco_annotations_without_images_are_reported(toy_coco_root, tmp_path):
    ann = tmp_path / 'empty.json'
    ann.write_text(
        json.dumps({
            'images': [],
            'annotations': [],
            'categories': []
        }))
    cfg = config(
        'configs/toy/rmoe_swin_mask_rcnn_toy_coco.py', **{
            'train_dataloader.dataset.data_root': str(toy_coco_root),
            'train_dataloader.dataset.ann_file': str(ann),
            'val_cfg': None
        })
    missing = check_config_paths(cfg, 'train')
    assert [(m.path, m.problem)
            for m in missing] == [(str(ann), 'lists no images')]


def test_wrapped_datasets_and_remote_paths(tmp_path):
    cfg = config('configs/toy/rmoe_swin_upernet_toy_ade20k.py', val_cfg=None)
    inner = cfg.train_dataloader.dataset
    inner.data_root = str(tmp_path / 'nowhere')
    remote = dict(inner, data_root='s3://bucket/ade')
    cfg.train_dataloader.dataset = dict(
        type='ConcatDataset',
        datasets=[dict(type='RepeatDataset', times=2, dataset=inner), remote])
    missing = check_config_paths(cfg, 'train')
    assert [(m.path, m.what) for m in missing] == [
        (str(tmp_path / 'nowhere'), 'ADE20K data root (train_dataloader.'
         'dataset.datasets[0].dataset.data_root)')
    ]
