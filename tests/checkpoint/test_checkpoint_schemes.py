"""Every checkpoint scheme mmengine registers, and every direct mmengine
loader, ends in the safe loader.

Each scheme resolves a name to a file the way mmengine does (a URL in its
model lists, a file under ``MMENGINE_HOME``, a download); the tests point
those lists at a hostile file in torch hub's cache (or a stand-in backend)
and expect the refusal, no marker, and the scheme's name in the message.
"""
import sys
import types

import pytest
import torch
from mmengine.runner import CheckpointLoader
from mmengine.runner import checkpoint as mm_checkpoint

import rmoe_mm  # noqa: F401  installs the safe loader
from rmoe_mm.checkpoint import CheckpointGlobalRefused, unsafe_schemes
from rmoe_mm.testing.malicious import PAYLOADS

EVIL_URL = 'https://example.invalid/models/evil.pth'


@pytest.fixture
def evil(tmp_path):
    """``(hub cache file of EVIL_URL, marker)``, torch hub redirected."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / 'hub'))
    path = tmp_path / 'hub' / 'checkpoints' / 'evil.pth'
    path.parent.mkdir(parents=True)
    marker = tmp_path / 'marker'
    PAYLOADS['os.system'][0](str(path), str(marker))
    yield path, marker
    torch.hub.set_dir(previous)


def refused(call, marker, *names):
    with pytest.raises(CheckpointGlobalRefused) as info:
        call()
    assert 'system' in str(info.value)
    for name in names:
        assert name in str(info.value), str(info.value)
    assert not marker.exists()


def test_every_registered_scheme_is_safe():
    assert unsafe_schemes() == {}
    for prefix in ('', 'http://', 'https://', 'torchvision://', 'modelzoo://',
                   'open-mmlab://', 'openmmlab://', 'mmcls://', 'pavi://',
                   r'(\S+\:)?s3://', r'(\S+\:)?petrel://'):
        loader = CheckpointLoader._schemes[prefix]
        assert loader.__module__ == 'rmoe_mm.checkpoint.schemes', prefix


@pytest.mark.parametrize('url', [EVIL_URL, EVIL_URL.replace('https', 'http')])
def test_http(url, evil):
    refused(lambda: CheckpointLoader.load_checkpoint(url), evil[1], url)


@pytest.mark.parametrize('scheme', ['torchvision://', 'modelzoo://'])
def test_torchvision(scheme, evil, monkeypatch):
    monkeypatch.setattr(mm_checkpoint, 'get_torchvision_models',
                        lambda: {'resnet_evil': EVIL_URL})
    refused(lambda: CheckpointLoader.load_checkpoint(f'{scheme}resnet_evil'),
            evil[1], EVIL_URL)


@pytest.mark.parametrize('scheme', ['open-mmlab://', 'openmmlab://'])
@pytest.mark.parametrize('where', ['url', 'mmengine_home'])
def test_openmmlab(scheme, where, evil, tmp_path, monkeypatch):
    monkeypatch.setenv('MMENGINE_HOME', str(tmp_path / 'mmengine_home'))
    (tmp_path / 'mmengine_home').mkdir()
    if where == 'url':
        target = EVIL_URL
    else:
        target = 'evil_local.pth'
        evil[0].rename(tmp_path / 'mmengine_home' / target)
    (tmp_path / 'mmengine_home' /
     'open_mmlab.json').write_text(f'{{"evil_model": "{target}"}}')
    name = f'{scheme}evil_model'
    refused(lambda: CheckpointLoader.load_checkpoint(name), evil[1], target)


def test_mmcls(evil, monkeypatch):
    monkeypatch.setattr(mm_checkpoint, 'get_mmcls_models',
                        lambda: {'evil_cls': EVIL_URL})
    refused(lambda: CheckpointLoader.load_checkpoint('mmcls://evil_cls'),
            evil[1], EVIL_URL)


def test_pavi(evil, monkeypatch):

    class Model:
        name = 'evil.pth'

        def download(self, target):
            with open(target, 'wb') as f:
                f.write(evil[0].read_bytes())

    modelcloud = types.SimpleNamespace(get=lambda path: Model())
    monkeypatch.setitem(sys.modules, 'pavi',
                        types.SimpleNamespace(modelcloud=modelcloud))
    refused(lambda: CheckpointLoader.load_checkpoint('pavi://team/evil'),
            evil[1], 'pavi://team/evil')


@pytest.mark.parametrize('name', [
    's3://bucket/evil.pth', 'cluster:s3://bucket/evil.pth',
    'petrel://bucket/evil.pth'
])
def test_ceph(name, evil, monkeypatch):
    import mmengine.fileio
    backend = types.SimpleNamespace(get=lambda path: evil[0].read_bytes())
    monkeypatch.setattr(mmengine.fileio, 'get_file_backend',
                        lambda *args, **kwargs: backend)
    refused(lambda: CheckpointLoader.load_checkpoint(name), evil[1], name)


def test_direct_mmengine_loaders(evil):
    """Code that calls mmengine's loaders or load_url by name is covered."""
    import mmengine.utils.dl_utils as dl_utils
    from mmengine.runner import load_checkpoint
    from mmengine.runner.checkpoint import _load_checkpoint
    calls = [
        lambda: mm_checkpoint.load_from_http(EVIL_URL),
        lambda: mm_checkpoint.load_url(EVIL_URL),
        lambda: dl_utils.load_url(EVIL_URL),
        lambda: _load_checkpoint(EVIL_URL),
        lambda: load_checkpoint(torch.nn.Linear(2, 2), EVIL_URL),
        lambda: mm_checkpoint.load_from_local(str(evil[0])),
    ]
    for call in calls:
        refused(call, evil[1])


def test_backbone_init_cfg_urls(evil):
    from rmoe_mm.backbones import CvT, RMoESwinTransformer
    for cls in (RMoESwinTransformer, CvT):
        model = cls(init_cfg=dict(type='Pretrained', checkpoint=EVIL_URL))
        refused(model.init_weights, evil[1], EVIL_URL)
