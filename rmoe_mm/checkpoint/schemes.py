"""Every scheme of mmengine's ``CheckpointLoader``, through the safe loader.

mmengine 0.10.7 registers a loader per prefix: local files (``''``),
``http(s)://`` (torch hub's ``load_state_dict_from_url``, which unpickles
fully by default), ``torchvision://`` / ``modelzoo://``, ``open-mmlab://`` /
``openmmlab://``, ``mmcls://`` (all three resolve a name to a URL or a file
under ``MMENGINE_HOME``), ``pavi://`` and ``s3://`` / ``petrel://``. Each is
replaced by a function that resolves the name exactly as mmengine does and
ends in :func:`~.loader.load_checkpoint_file`. The module-level loaders and
``load_url`` names in mmengine are rebound too, so code that calls them
directly (not through ``CheckpointLoader``) is covered as well.
"""
import io
import os.path as osp
import warnings
from tempfile import TemporaryDirectory
from typing import Callable, Dict, Tuple

from mmengine.dist import get_dist_info
from mmengine.runner import checkpoint as mm_checkpoint
from mmengine.runner.checkpoint import CheckpointLoader

from .loader import load_checkpoint_file, load_url


def load_from_local(filename: str, map_location=None):
    """A local file path (mmengine's ``''`` scheme)."""
    return load_checkpoint_file(filename, map_location)


def load_from_http(filename: str, map_location=None, model_dir=None):
    """``http(s)://``: rank 0 fetches into torch hub's cache first."""
    import torch.distributed as dist
    rank, world_size = get_dist_info()
    if rank == 0:
        checkpoint = load_url(
            filename, model_dir=model_dir, map_location=map_location)
    if world_size > 1:
        dist.barrier()
        if rank > 0:
            checkpoint = load_url(
                filename, model_dir=model_dir, map_location=map_location)
    return checkpoint


def load_from_torchvision(filename: str, map_location=None):
    """``torchvision://NAME`` (and the deprecated ``modelzoo://NAME``)."""
    if filename.startswith('modelzoo://'):
        warnings.warn(
            'The URL scheme of "modelzoo://" is deprecated, please '
            'use "torchvision://" instead', DeprecationWarning)
        model_name = filename[len('modelzoo://'):]
    else:
        model_name = filename[len('torchvision://'):]
    urls = mm_checkpoint.get_torchvision_models()
    return load_from_http(
        _lookup(urls, model_name, filename), map_location=map_location)


def load_from_openmmlab(filename: str, map_location=None):
    """``open-mmlab://NAME`` / ``openmmlab://NAME``: a URL or a file under
    ``MMENGINE_HOME``, from mmengine's model list."""
    prefix = 'open-mmlab://' if filename.startswith('open-mmlab://') \
        else 'openmmlab://'
    model_name = filename[len(prefix):]
    deprecated = mm_checkpoint.get_deprecated_model_names()
    if model_name in deprecated:
        warnings.warn(
            f'{prefix}{model_name} is deprecated in favor '
            f'of {prefix}{deprecated[model_name]}', DeprecationWarning)
        model_name = deprecated[model_name]
    model_url = _lookup(mm_checkpoint.get_external_models(), model_name,
                        filename)
    if model_url.startswith(('http://', 'https://')):
        return load_from_http(model_url, map_location=map_location)
    local = osp.join(mm_checkpoint._get_mmengine_home(), model_url)
    if not osp.isfile(local):
        raise FileNotFoundError(f'{local} can not be found.')
    return load_checkpoint_file(local, map_location, source=filename)


def load_from_mmcls(filename: str, map_location=None):
    """``mmcls://NAME``: the backbone of an mmcls model."""
    model_name = filename[len('mmcls://'):]
    url = _lookup(mm_checkpoint.get_mmcls_models(), model_name, filename)
    checkpoint = load_from_http(url, map_location=map_location)
    return mm_checkpoint._process_mmcls_checkpoint(checkpoint)


def load_from_pavi(filename: str, map_location=None):
    """``pavi://PATH``: downloaded to a temporary file, then loaded."""
    assert filename.startswith('pavi://'), \
        f'Expected filename startswith `pavi://`, but get {filename}'
    try:
        from pavi import modelcloud
    except ImportError:
        raise ImportError(
            'Please install pavi to load checkpoint from modelcloud.')
    model = modelcloud.get(filename[len('pavi://'):])
    with TemporaryDirectory() as tmp_dir:
        downloaded = osp.join(tmp_dir, model.name)
        model.download(downloaded)
        return load_checkpoint_file(downloaded, map_location, source=filename)


def load_from_ceph(filename: str, map_location=None, backend='petrel'):
    """``s3://`` / ``petrel://`` (optionally ``name:s3://``): read into
    memory through mmengine's file backend, then loaded."""
    from mmengine.fileio import get_file_backend
    file_backend = get_file_backend(
        filename, backend_args={'backend': backend})
    with io.BytesIO(file_backend.get(filename)) as buffer:
        return load_checkpoint_file(buffer, map_location, source=filename)


def _lookup(table: Dict[str, str], name: str, filename: str) -> str:
    if name not in table:
        raise KeyError(f'{filename}: mmengine knows no model named {name!r}')
    return table[name]


#: mmengine's prefixes -> the safe loader that replaces mmengine's.
SCHEMES: Dict[Tuple[str, ...], Callable] = {
    ('', ): load_from_local,
    ('http://', 'https://'): load_from_http,
    ('modelzoo://', 'torchvision://'): load_from_torchvision,
    ('open-mmlab://', 'openmmlab://'): load_from_openmmlab,
    ('mmcls://', ): load_from_mmcls,
    ('pavi://', ): load_from_pavi,
    (r'(\S+\:)?s3://', r'(\S+\:)?petrel://'): load_from_ceph,
}


def scheme_loaders() -> Dict[str, Callable]:
    """Prefix -> loader, for every prefix this module covers."""
    return {
        p: loader
        for prefixes, loader in SCHEMES.items()
        for p in prefixes
    }


def install() -> None:
    """Route every mmengine scheme and ``load_url`` through the safe loader.

    Idempotent. Prefixes that other packages registered and this module does
    not know keep their loader; :func:`unsafe_schemes` lists them.
    """
    for prefixes, loader in SCHEMES.items():
        CheckpointLoader.register_scheme(
            prefixes=list(prefixes), loader=loader, force=True)
    # Module-level names, for code that calls them directly.
    for loader in SCHEMES.values():
        setattr(mm_checkpoint, loader.__name__, loader)
    mm_checkpoint.load_url = load_url
    import mmengine.utils.dl_utils as dl_utils
    dl_utils.load_url = load_url
    hub = getattr(dl_utils, 'hub', None)
    if hub is not None and hasattr(hub, 'load_url'):
        hub.load_url = load_url


def unsafe_schemes() -> Dict[str, Callable]:
    """Registered prefixes whose loader is not one of this module's."""
    ours = set(SCHEMES.values())
    return {
        p: loader
        for p, loader in CheckpointLoader._schemes.items()
        if loader not in ours
    }
