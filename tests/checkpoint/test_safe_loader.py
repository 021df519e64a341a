"""Hostile checkpoints are refused on every loading path, local and by URL.

Reference for "dangerous": the same file loaded with full unpickling runs
its command (the control test); for "legitimate", numpy's own pickle.
Every payload of ``tests/malicious.py`` goes through mmengine's
``CheckpointLoader`` as a local file and as an ``https://`` URL whose file
already sits in torch hub's cache (no network): the marker never appears,
and the error names the file and the refused global. Legitimate files
(numeric numpy of every dtype, mmengine message hub objects, numpy-1
pickles) load as numpy's own pickle loads them.
"""
import logging
import pickle
import warnings

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MMLogger
from mmengine.runner import CheckpointLoader

import rmoe_mm  # noqa: F401  installs the safe loader
from rmoe_mm.checkpoint import CheckpointGlobalRefused, load_checkpoint_file
from rmoe_mm.checkpoint import loader as loader_module
from rmoe_mm.checkpoint import trust as trust_module
from rmoe_mm.checkpoint import trust_checkpoint
from rmoe_mm.checkpoint.allowlist import numeric_dtypes
from rmoe_mm.checkpoint.trust import split_trusted
from rmoe_mm.testing.malicious import (CODE_PAYLOADS, PAYLOADS,
                                       has_stack_global, rewrite_data_pkl)

URL = 'https://example.invalid/models/{}.pth'


@pytest.fixture
def hub_dir(tmp_path):
    """torch hub's directory, redirected to an empty temporary one."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / 'hub'))
    (tmp_path / 'hub' / 'checkpoints').mkdir(parents=True)
    yield tmp_path / 'hub'
    torch.hub.set_dir(previous)


@pytest.fixture(autouse=True)
def no_trust(monkeypatch):
    monkeypatch.delenv(trust_module.ENV_TRUSTED, raising=False)
    monkeypatch.setattr(trust_module, '_trusted', set())


def cached(hub_dir, name):
    """The hub cache file of ``URL.format(name)``."""
    return hub_dir / 'checkpoints' / f'{name}.pth'


@pytest.mark.parametrize('name', sorted(CODE_PAYLOADS))
def test_control_full_unpickling_runs_the_payload(name, tmp_path):
    write, _ = CODE_PAYLOADS[name]
    path, marker = tmp_path / 'evil.pth', tmp_path / 'marker'
    write(str(path), str(marker))
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_stack_global_payload_uses_stack_global(tmp_path):
    write, _ = PAYLOADS['STACK_GLOBAL os.system']
    write(str(tmp_path / 'evil.pth'), str(tmp_path / 'marker'))
    assert has_stack_global(tmp_path / 'evil.pth')


@pytest.mark.parametrize('route', ['local', 'https'])
@pytest.mark.parametrize('name', sorted(PAYLOADS))
def test_payload_is_refused(name, route, tmp_path, hub_dir):
    write, refused = PAYLOADS[name]
    marker = tmp_path / 'marker'
    if route == 'local':
        path = tmp_path / 'evil.pth'
        write(str(path), str(marker))
        filename = str(path)
    else:
        write(str(cached(hub_dir, 'evil')), str(marker))
        filename = URL.format('evil')
    with pytest.raises(CheckpointGlobalRefused) as info:
        CheckpointLoader.load_checkpoint(filename, map_location='cpu')
    message = str(info.value)
    assert filename in message and refused in message, message
    assert 'RMOE_MM_TRUSTED_CHECKPOINTS' in message
    assert not marker.exists()


@pytest.mark.parametrize('name', sorted(PAYLOADS))
def test_refused_before_torch_load_runs(name, tmp_path, monkeypatch):
    """The pre-scan decides before numpy or torch's unpickler see a byte."""
    write, _ = PAYLOADS[name]
    path = tmp_path / 'evil.pth'
    write(str(path), str(tmp_path / 'marker'))

    def forbidden(*args, **kwargs):
        raise AssertionError('torch.load ran on a file the pre-scan refuses')

    monkeypatch.setattr(loader_module.torch, 'load', forbidden)
    with pytest.raises(CheckpointGlobalRefused):
        load_checkpoint_file(path)


def test_plain_torch_load_is_not_widened(tmp_path):
    """Outside the safe loader, torch's own allow-list is unchanged."""
    path = tmp_path / 'numpy.pth'
    torch.save({'x': np.float64(1.)}, path)
    with pytest.raises(Exception, match='numpy'):
        torch.load(path, weights_only=True)
    assert np.dtype not in torch.serialization.get_safe_globals()


# ------------------------------------------------------------ legitimate
def _same(a, b) -> bool:
    return type(a) is type(b) and np.asarray(a).dtype == np.asarray(
        b).dtype and np.asarray(a).tobytes() == np.asarray(b).tobytes() and \
        np.shape(a) == np.shape(b)


@pytest.mark.parametrize('dtype', [str(d) for d in numeric_dtypes()])
def test_numeric_numpy_loads_as_numpy_pickles_it(dtype, tmp_path):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((2, 3)) * 50).astype(dtype)
    values = {
        'array': array,
        'fortran': np.asfortranarray(array),
        'big_endian': array.astype(np.dtype(dtype).newbyteorder('>')),
        'zero_d': np.array(array[0, 0]),
        'empty': np.zeros((0, 3), dtype),
        'scalar': array[1, 2],
    }
    path = tmp_path / 'numpy.pth'
    torch.save(values, path)
    loaded = load_checkpoint_file(path)
    for key, value in values.items():
        # Reference: numpy's own pickle round trip (it stores big-endian
        # arrays in native order).
        assert _same(loaded[key], pickle.loads(pickle.dumps(value))), key


def test_mmengine_objects_load(tmp_path):
    full, empty = HistoryBuffer(), HistoryBuffer()
    full.update(1.5)
    full.update(2.5)
    path = tmp_path / 'hub.pth'
    torch.save({'full': full, 'empty': empty, 'seed': np.int64(3)}, path)
    loaded = load_checkpoint_file(path)
    assert loaded['full'].mean() == 2.0 and loaded['full'].current() == 2.5
    assert len(loaded['empty'].data[0]) == 0 and loaded['seed'] == 3


def test_numpy_1_pickles_load(tmp_path):
    """Checkpoints written under numpy 1.x name ``numpy.core.multiarray``."""
    path = tmp_path / 'numpy1.pth'
    torch.save({'a': np.arange(4.), 's': np.float32(2.5)}, path)
    rewrite_data_pkl(
        path, lambda data: data.replace(b'numpy._core.multiarray',
                                        b'numpy.core.multiarray'))
    loaded = load_checkpoint_file(path)
    assert np.array_equal(loaded['a'], np.arange(4.)) and loaded['s'] == 2.5


def test_url_is_read_from_the_hub_cache_without_network(hub_dir):
    torch.save({'state_dict': {
        'w': torch.arange(3.)
    }}, cached(hub_dir, 'good'))
    loaded = CheckpointLoader.load_checkpoint(URL.format('good'))
    assert torch.equal(loaded['state_dict']['w'], torch.arange(3.))


def test_legacy_zipped_url_file_is_checked_too(hub_dir, tmp_path):
    """torch hub unzips a hand-zipped single file; its content is checked."""
    import zipfile
    write, _ = PAYLOADS['os.system']
    inner, marker = tmp_path / 'inner.pth', tmp_path / 'marker'
    write(str(inner), str(marker))
    with zipfile.ZipFile(cached(hub_dir, 'zipped'), 'w') as archive:
        archive.write(inner, 'inner.pth')
    with pytest.raises(CheckpointGlobalRefused, match='system'):
        CheckpointLoader.load_checkpoint(URL.format('zipped'))
    assert not marker.exists()


def test_legacy_format_is_checked_too(tmp_path):
    """``_use_new_zipfile_serialization=False`` files are pre-scanned."""
    path, marker = tmp_path / 'legacy.pth', tmp_path / 'marker'
    good = tmp_path / 'good.pth'
    torch.save({
        'a': np.arange(3),
        'w': torch.ones(2)
    },
               good,
               _use_new_zipfile_serialization=False)
    assert np.array_equal(load_checkpoint_file(good)['a'], np.arange(3))
    from rmoe_mm.testing.malicious import Reduce
    torch.save({'x': Reduce(eval, (f"open({str(marker)!r}, 'w')", ))},
               path,
               _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointGlobalRefused, match='builtins.eval'):
        load_checkpoint_file(path)
    assert not marker.exists()


# ------------------------------------------------------------------ trust
class Harmless:
    """Not on the allow-list, harmless to build."""

    def __init__(self):
        self.value = 7


def _capture_warnings():
    records = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = records.append
    MMLogger.get_current_instance().addHandler(handler)
    return records, handler


def test_trusted_file_loads_fully_with_a_warning(tmp_path, monkeypatch):
    path = tmp_path / 'trusted.pth'
    torch.save({'obj': Harmless()}, path)
    with pytest.raises(CheckpointGlobalRefused, match='Harmless'):
        load_checkpoint_file(path)
    monkeypatch.setenv('RMOE_MM_TRUSTED_CHECKPOINTS',
                       f'/nowhere/else.pth:{path}')
    records, handler = _capture_warnings()
    try:
        assert load_checkpoint_file(path)['obj'].value == 7
    finally:
        MMLogger.get_current_instance().removeHandler(handler)
    messages = [r.getMessage() for r in records]
    assert any(str(path) in m and 'full unpickling' in m for m in messages)


def test_trust_is_by_exact_name(tmp_path):
    trusted, other = tmp_path / 'a.pth', tmp_path / 'b.pth'
    for path in (trusted, other):
        torch.save({'obj': Harmless()}, path)
    trust_checkpoint(str(trusted))
    assert load_checkpoint_file(trusted)['obj'].value == 7
    with pytest.raises(CheckpointGlobalRefused):
        load_checkpoint_file(other)


def test_trusted_url_from_the_environment(hub_dir, monkeypatch):
    torch.save({'obj': Harmless()}, cached(hub_dir, 'trusted'))
    monkeypatch.setenv('RMOE_MM_TRUSTED_CHECKPOINTS',
                       f"{URL.format('other')}:{URL.format('trusted')}")
    loaded = CheckpointLoader.load_checkpoint(URL.format('trusted'))
    assert loaded['obj'].value == 7


def test_trusted_list_keeps_urls_whole():
    assert split_trusted('/a.pth:https://x.org/b.pth::s3://bucket/c.pth') == \
        ['/a.pth', 'https://x.org/b.pth', 's3://bucket/c.pth']


def test_formats_the_pre_scan_cannot_read_are_refused(tmp_path):
    import io
    import tarfile
    with tarfile.open(tmp_path / 'old.tar', 'w') as archive:
        info = tarfile.TarInfo('pickle')
        info.size = 4
        archive.addfile(info, io.BytesIO(b'xxxx'))
    with pytest.raises(CheckpointGlobalRefused, match='legacy tar format'):
        load_checkpoint_file(tmp_path / 'old.tar')
    with warnings.catch_warnings():  # torch.jit is deprecated
        warnings.simplefilter('ignore')
        torch.jit.save(
            torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / 'script.pt')
    with pytest.raises(CheckpointGlobalRefused, match='__torch__'):
        load_checkpoint_file(tmp_path / 'script.pt')


def test_a_corrupt_file_is_an_error_not_a_refusal(tmp_path):
    path = tmp_path / 'junk.pth'
    path.write_bytes(b'not a pickle')
    with pytest.raises(pickle.UnpicklingError) as info:
        load_checkpoint_file(path)
    assert not isinstance(info.value, CheckpointGlobalRefused)
    assert f'cannot read checkpoint {str(path)!r}' in str(info.value)


def test_a_truncated_file_names_itself(tmp_path):
    path = tmp_path / 'iter_8.pth'
    torch.save({'w': torch.ones(100)}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(
            RuntimeError, match=f'cannot read checkpoint '
            f'{str(path)!r}'):
        load_checkpoint_file(path)
