"""The explicit opt-in that lets a named checkpoint be fully unpickled.

A file is trusted only by name: an exact path (compared after resolving
``~`` and symlinks) or an exact URL / scheme name (``https://...``,
``torchvision://resnet50``), given in ``RMOE_MM_TRUSTED_CHECKPOINTS``
(``os.pathsep``-separated; a URL's ``://`` does not split it) or by
:func:`trust_checkpoint` (what the tools' ``--trust-checkpoint`` calls).
"""
import os
import os.path as osp
import re
from typing import Iterable, List, Set

ENV_TRUSTED = 'RMOE_MM_TRUSTED_CHECKPOINTS'

_trusted: Set[str] = set()
_SCHEME = re.compile(r'^[A-Za-z][\w+.-]*$')


def _is_url(name: str) -> bool:
    return '://' in name


def _normalise(name: str) -> str:
    name = str(name).strip()
    if not name or _is_url(name):
        return name
    return osp.realpath(osp.expanduser(name))


def split_trusted(value: str) -> List[str]:
    """Entries of an ``os.pathsep``-separated list; URLs stay whole.

    On POSIX the separator is ``:``, which a URL contains: a piece that is
    a bare scheme (``https``) is joined with the ``//...`` piece after it.
    """
    pieces = value.split(os.pathsep)
    entries: List[str] = []
    i = 0
    while i < len(pieces):
        piece = pieces[i]
        if os.pathsep == ':' and _SCHEME.match(piece) and \
                i + 1 < len(pieces) and pieces[i + 1].startswith('//'):
            piece = f'{piece}:{pieces[i + 1]}'
            i += 1
        if piece.strip():
            entries.append(piece.strip())
        i += 1
    return entries


def trust_checkpoint(name: str) -> None:
    """Trust the checkpoint at this exact path or URL for this process."""
    _trusted.add(_normalise(name))


def trusted_checkpoints() -> Set[str]:
    """Every trusted name: :func:`trust_checkpoint` and the environment."""
    from_env = {
        _normalise(e)
        for e in split_trusted(os.environ.get(ENV_TRUSTED, ''))
    }
    return _trusted | from_env


def is_trusted(names: Iterable[str]) -> bool:
    """Whether any of ``names`` (a path, a URL, its cache file) is trusted."""
    trusted = trusted_checkpoints()
    return any(_normalise(n) in trusted for n in names if n)
