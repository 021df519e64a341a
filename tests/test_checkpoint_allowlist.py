"""torch >= 2.6 loads mmengine checkpoints through rmoe_mm's allow-list.

The reference for "accepted" is a checkpoint written by mmengine's own
``Runner.save_checkpoint`` (message hub with HistoryBuffer, numpy meta,
optimizer and scheduler state); "refused" is a pickle that names a global
outside the list.
"""
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner import CheckpointLoader
from mmengine.runner.checkpoint import _load_checkpoint

import rmoe_mm  # noqa: F401
from rmoe_mm.checkpoint import CheckpointGlobalRefused


def _runner_like_checkpoint():
    """What mmengine's Runner.save_checkpoint puts in a file."""
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    buffer = HistoryBuffer()
    buffer.update(1.5)
    buffer.update(2.5)
    return {
        'meta': {
            'epoch': 0,
            'iter': 7,
            'seed': np.int64(3),
            'dataset_meta': {
                'classes': ('a', 'b'),
                'palette': [[1, 2, 3]]
            },
            'hook_msgs': {
                'last_ckpt': 'x.pth'
            },
        },
        'state_dict': model.state_dict(),
        'message_hub': {
            'log_scalars': {
                'train/loss': buffer
            },
            'runtime_info': {
                'iter': 7,
                'score': np.float64(0.25),
                'arr': np.arange(3)
            },
            'resumed_keys': {
                'iter': True
            },
        },
        'optimizer': optimizer.state_dict(),
        'param_schedulers': [{
            'last_epoch': 7,
            'base_lrs': [0.1]
        }],
    }


class Forbidden:
    """A class no checkpoint should be allowed to instantiate."""


def test_mmengine_checkpoint_loads_with_weights_only(tmp_path):
    path = tmp_path / 'epoch_1.pth'
    saved = _runner_like_checkpoint()
    torch.save(saved, path)
    loaded = _load_checkpoint(str(path), map_location='cpu')
    assert loaded['meta']['iter'] == 7
    assert loaded['message_hub']['log_scalars']['train/loss'].current() == 2.5
    np.testing.assert_array_equal(loaded['message_hub']['runtime_info']['arr'],
                                  np.arange(3))
    torch.testing.assert_close(
        loaded['state_dict']['weight'],
        saved['state_dict']['weight'],
        rtol=0,
        atol=0)


def test_weights_only_stays_on_globally():
    """The allow-list widens weights_only; it does not switch it off."""
    import inspect
    default = inspect.signature(torch.load).parameters['weights_only'].default
    assert default in (None, True)
    assert Forbidden not in torch.serialization.get_safe_globals()


def test_foreign_global_is_refused_with_its_name(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'payload': Forbidden()}, path)
    with pytest.raises(CheckpointGlobalRefused) as info:
        CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    message = str(info.value)
    assert 'Forbidden' in message and str(path) in message
    assert 'weights_only' in message


def test_refusal_is_an_unpickling_error(tmp_path):
    """Callers catching pickle.UnpicklingError keep working."""
    path = tmp_path / 'evil.pth'
    torch.save(Forbidden(), path)
    with pytest.raises(pickle.UnpicklingError):
        _load_checkpoint(str(path), map_location='cpu')


class Evil:
    """Pickles as getattr(HistoryBuffer, '__init__'): no statistics method."""

    def __reduce__(self):
        return getattr, (HistoryBuffer, '__init__')


def test_getattr_is_limited_to_history_buffer_statistics(tmp_path):
    path = tmp_path / 'getattr.pth'
    torch.save({'x': Evil()}, path)
    with pytest.raises(CheckpointGlobalRefused, match='getattr'):
        CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
