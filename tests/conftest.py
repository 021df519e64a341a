"""Shared pytest fixtures: toy datasets generated once per session.

Helpers for test modules are in :mod:`rmoe_mm.testing` (import them from
there, not from this file).
"""
from pathlib import Path

import pytest

from rmoe_mm.testing import (TOY_NUM_TRAIN, TOY_NUM_VAL, TOY_SEED, TOY_SIZE,
                             load_toy_data_tool)


@pytest.fixture(scope='session')
def toy_data_tool():
    """The tools/misc/make_toy_data.py module."""
    return load_toy_data_tool()


@pytest.fixture(scope='session')
def toy_ade20k_root(tmp_path_factory, toy_data_tool):
    """data_root of a toy ADE20K (8 train / 4 val images of 64 px)."""
    return toy_data_tool.make_toy_ade20k(
        tmp_path_factory.mktemp('toy_data'),
        num_train=TOY_NUM_TRAIN,
        num_val=TOY_NUM_VAL,
        size=TOY_SIZE,
        seed=TOY_SEED)


@pytest.fixture(scope='session')
def toy_coco_root(tmp_path_factory, toy_data_tool):
    """data_root of a toy COCO (8 train / 4 val images of 64 px)."""
    return toy_data_tool.make_toy_coco(
        tmp_path_factory.mktemp('toy_data'),
        num_train=TOY_NUM_TRAIN,
        num_val=TOY_NUM_VAL,
        size=TOY_SIZE,
        seed=TOY_SEED)


def _data_root_options(root):
    return [
        f'{split}_dataloader.dataset.data_root={root}'
        for split in ('train', 'val', 'test')
    ]


@pytest.fixture(scope='session')
def toy_ade20k_options(toy_ade20k_root):
    """``--cfg-options`` pointing a toy ADE20K config at the session's data."""
    return _data_root_options(toy_ade20k_root)


@pytest.fixture(scope='session')
def toy_coco_options(toy_coco_root):
    """``--cfg-options`` pointing a toy COCO config at the session's data."""
    ann = Path(toy_coco_root) / 'annotations' / 'instances_val2017.json'
    return _data_root_options(toy_coco_root) + [
        f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}'
    ]
