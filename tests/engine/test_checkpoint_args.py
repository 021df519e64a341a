"""The tools' checkpoint options and their one-message exit on user errors."""
import argparse

import pytest
from mmseg.datasets import ADE20KDataset

from rmoe_mm.checkpoint import fit, trust
from rmoe_mm.checkpoint.fit import CheckpointMismatchError
from rmoe_mm.engine.checkpoint_args import (add_checkpoint_args,
                                            apply_checkpoint_args, user_errors)


def test_options_trust_by_name_and_allow_partial_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(trust, '_trusted', set())
    monkeypatch.setattr(fit, '_allow_partial', False)
    monkeypatch.delenv(fit.ENV_ALLOW_PARTIAL, raising=False)
    parser = argparse.ArgumentParser()
    add_checkpoint_args(parser)
    path = str(tmp_path / 'a.pth')
    args = parser.parse_args([
        '--trust-checkpoint', path, '--trust-checkpoint',
        'https://x.org/b.pth', '--allow-partial-load'
    ])
    assert not fit.partial_loads_allowed()
    apply_checkpoint_args(args)
    assert trust.is_trusted([path]) and trust.is_trusted(
        ['https://x.org/b.pth'])
    assert not trust.is_trusted([str(tmp_path / 'b.pth')])
    assert fit.partial_loads_allowed()


def test_user_error_exits_1_with_the_message_alone(capsys):
    with pytest.raises(SystemExit) as info:
        with user_errors():
            raise CheckpointMismatchError('the checkpoint has 4 experts')
    assert info.value.code == 1
    assert capsys.readouterr().err.strip() == \
        'CheckpointMismatchError: the checkpoint has 4 experts'


def test_empty_dataset_is_named(tmp_path, capsys):
    for sub in ('images/training', 'annotations/training'):
        (tmp_path / sub).mkdir(parents=True)
    with pytest.raises(SystemExit):
        with user_errors():
            ADE20KDataset(
                data_root=str(tmp_path),
                pipeline=[],
                data_prefix=dict(
                    img_path='images/training',
                    seg_map_path='annotations/training'))
    assert 'EmptyDataset: a dataset has no samples' in capsys.readouterr().err


def test_other_errors_keep_their_traceback():
    with pytest.raises(ValueError, match='something else'):
        with user_errors():
            raise ValueError('something else')
