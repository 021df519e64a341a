"""One safe way to read a ``torch.save`` file, local or from a URL.

:func:`load_checkpoint_file` pre-scans the file (:mod:`.prescan`), then
loads it with ``torch.load(weights_only=True)`` and the allow-list of
:mod:`.allowlist`, both over the same open file. A refused file is loaded
with full unpickling only when it is trusted by name (:mod:`.trust`), and
that is logged at WARNING. :func:`load_url` is torch hub's
``load_state_dict_from_url`` (same cache file, so a cached file needs no
network) ending in :func:`load_checkpoint_file`.
"""
import logging
import os
import os.path as osp
import pickle
import shutil
import sys
import zipfile
from contextlib import contextmanager
from typing import Any, BinaryIO, Iterator, Optional, Union
from urllib.parse import urlparse

import torch
from mmengine.logging import print_log

from .allowlist import safe_globals
from .prescan import CheckpointGlobalRefused, prescan
from .trust import ENV_TRUSTED, is_trusted

PathOrFile = Union[str, os.PathLike, BinaryIO]


@contextmanager
def _opened(file: PathOrFile) -> Iterator[BinaryIO]:
    if isinstance(file, (str, os.PathLike)):
        with open(file, 'rb') as opened:
            yield opened
    else:
        yield file


def _describe(file: PathOrFile, source: Optional[str]) -> str:
    path = str(file) if isinstance(file, (str, os.PathLike)) else None
    if source and path and source != path:
        return f'{source} (cached at {path})'
    return source or path or '<file object>'


def load_checkpoint_file(file: PathOrFile,
                         map_location=None,
                         *,
                         source: Optional[str] = None,
                         logger='current') -> Any:
    """``torch.load`` that never unpickles an object outside the allow-list.

    Args:
        file: a local path, or a seekable binary file object.
        map_location: as for :func:`torch.load`.
        source: what the user named when ``file`` is its local copy (a URL,
            ``torchvision://...``); used in messages and for trust.
        logger: mmengine logger for the warning of a trusted full load.

    Returns:
        The loaded object.

    Raises:
        FileNotFoundError: ``file`` is a path that does not exist.
        CheckpointGlobalRefused: the file needs a global or a numpy object
            outside the allow-list, and neither ``file`` nor ``source`` is
            trusted. The message names the file and the global.
    """
    name = _describe(file, source)
    if isinstance(file, (str, os.PathLike)):
        file = osp.expanduser(os.fspath(file))
        if not osp.isfile(file):
            raise FileNotFoundError(f'checkpoint {name!r} can not be found.')
    with _opened(file) as opened:
        start = opened.tell()
        try:
            try:
                prescan(opened)
            except RuntimeError as err:  # e.g. a zip cut short by a kill
                raise RuntimeError(
                    f'cannot read checkpoint {name!r}: {err}') from err
            with torch.serialization.safe_globals(safe_globals()):
                return torch.load(
                    opened, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as err:
            refusal = _refusal(err, name)
            names = [source, file if isinstance(file, str) else None]
            if not is_trusted(names):
                if refusal is None:
                    raise pickle.UnpicklingError(
                        f'cannot read checkpoint {name!r}: {err}') from err
                raise refusal from err
            needs = f'{refusal.refused}' + (
                f' ({refusal.reason})' if refusal.reason else '') \
                if refusal else f'a pickle the safe loader cannot read ({err})'
            print_log(
                f'Loading {name} with full unpickling (weights_only=False): '
                f'it is trusted ({ENV_TRUSTED} or --trust-checkpoint) and '
                f'needs {needs}. A trusted file can run any code when it is '
                'loaded.',
                logger=logger,
                level=logging.WARNING)
            opened.seek(start)
            return torch.load(
                opened, map_location=map_location, weights_only=False)


def _refusal(err: pickle.UnpicklingError,
             name: str) -> Optional[CheckpointGlobalRefused]:
    """``err`` as a :class:`CheckpointGlobalRefused` naming ``name``, or
    None when the file is no readable pickle at all (not a refusal)."""
    if isinstance(err, CheckpointGlobalRefused):
        return err.with_filename(name)
    text = str(err)
    if not text.startswith('Weights only load failed'):
        return None
    # torch's own refusal (the pre-scan passed; e.g. an opcode it lacks).
    marker = 'GLOBAL '
    if marker in text:
        refused = marker + text.split(marker, 1)[1].split()[0]
    else:
        refused = "what torch's weights_only unpickler refuses"
    reason = next((line.strip() for line in text.splitlines()
                   if 'Unsupported' in line or 'GLOBAL' in line), '')
    return CheckpointGlobalRefused(refused, reason[:300], name)


# ----------------------------------------------------------------- URLs
def hub_cache_file(url: str,
                   model_dir: Optional[str] = None,
                   file_name: Optional[str] = None) -> str:
    """Where torch hub keeps ``url``: ``<hub dir>/checkpoints/<name>``."""
    if model_dir is None:
        model_dir = osp.join(torch.hub.get_dir(), 'checkpoints')
    name = file_name or osp.basename(urlparse(url).path)
    return osp.join(model_dir, name)


def load_url(url: str,
             model_dir: Optional[str] = None,
             map_location=None,
             progress: bool = True,
             check_hash: bool = False,
             file_name: Optional[str] = None,
             weights_only: Optional[bool] = None,
             logger='current') -> Any:
    """``torch.hub.load_state_dict_from_url``, loading safely.

    Same arguments and cache file as torch hub's (``weights_only`` is
    accepted for compatibility and ignored: the load is always the safe
    one); a file already in the cache is used without network.
    """
    cached = hub_cache_file(url, model_dir, file_name)
    if not osp.exists(cached):
        os.makedirs(osp.dirname(cached), exist_ok=True)
        sys.stdout.write(f'Downloading: "{url}" to {cached}\n')
        hash_prefix = None
        if check_hash:
            match = torch.hub.HASH_REGEX.search(osp.basename(cached))
            hash_prefix = match.group(1) if match else None
        try:
            torch.hub.download_url_to_file(
                url, cached, hash_prefix, progress=progress)
        except OSError as err:
            raise OSError(
                f'could not download {url} to {cached} ({err}); to use the '
                'file offline, put it at that path') from err
    if _is_legacy_zip(cached):
        cached = _extract_legacy_zip(cached)
    return load_checkpoint_file(
        cached, map_location, source=url, logger=logger)


def _is_legacy_zip(path: str) -> bool:
    """torch < 1.6 files that users zipped by hand (one member, no dirs)."""
    with open(path, 'rb') as f:
        if f.read(4) != b'PK\x03\x04':
            return False
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        return len(members) == 1 and not members[0].is_dir() and \
            not members[0].filename.endswith('data.pkl')


def _extract_legacy_zip(path: str) -> str:
    """Unzip the single member beside ``path`` (its base name only)."""
    with zipfile.ZipFile(path) as archive:
        member = archive.infolist()[0]
        target = osp.join(osp.dirname(path), osp.basename(member.filename))
        with archive.open(member) as src, open(target, 'wb') as dst:
            shutil.copyfileobj(src, dst)
    return target
