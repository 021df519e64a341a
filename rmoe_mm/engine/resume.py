"""Which checkpoint ``tools/train.py --resume`` (without a path) continues.

mmengine reads the path in ``WORK_DIR/last_checkpoint``. When a run is killed
while that file is written it is empty, and mmengine then fails with
``FileNotFoundError:  can not be found.`` (a blank name) although an intact
``iter_N.pth`` sits beside it; with no checkpoint at all it silently trains
from scratch. :func:`find_resume_checkpoint` says what it found and falls
back to the newest intact ``iter_*.pth`` / ``epoch_*.pth``.
"""
import glob
import os.path as osp
import re
from typing import List, Optional, Tuple

_NUMBERED = re.compile(r'^(iter|epoch)_(\d+)\.pth$')


def is_intact_checkpoint(path: str) -> bool:
    """Whether ``path`` is a complete ``torch.save`` archive.

    A write that was killed leaves a zip without its central directory;
    torch's own reader then fails to open it. The tensors are not read.
    """
    if not osp.isfile(path) or osp.getsize(path) == 0:
        return False
    from torch.serialization import _open_zipfile_reader
    try:
        with open(path, 'rb') as f, _open_zipfile_reader(f) as archive:
            return archive.has_record('data.pkl')
    except (RuntimeError, OSError):
        return False


def numbered_checkpoints(work_dir: str) -> List[str]:
    """``iter_*.pth`` and ``epoch_*.pth`` of ``work_dir``, newest first
    (highest number; the newer file among equal numbers)."""
    found = []
    for path in glob.glob(osp.join(glob.escape(work_dir), '*.pth')):
        match = _NUMBERED.match(osp.basename(path))
        if match:
            found.append((int(match.group(2)), osp.getmtime(path), path))
    return [path for *_, path in sorted(found, reverse=True)]


def find_resume_checkpoint(work_dir: str) -> Tuple[Optional[str], List[str]]:
    """The checkpoint to resume from in ``work_dir``, and what to warn about.

    Returns:
        ``(path, warnings)``: ``path`` is what ``last_checkpoint`` names when
        that file is intact, else the newest intact numbered checkpoint,
        else None (nothing to resume); ``warnings`` explain any fallback.
    """
    warnings: List[str] = []
    record = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(record):
        with open(record) as f:
            named = f.read().strip()
        if not named:
            warnings.append(f'{record} is empty (the run was probably killed '
                            'while writing it)')
        elif not osp.isfile(named):
            warnings.append(f'{record} names {named}, which does not exist')
        elif not is_intact_checkpoint(named):
            warnings.append(f'{record} names {named}, which is not a complete '
                            'checkpoint (a write that was cut short?)')
        else:
            return named, warnings
    for path in numbered_checkpoints(work_dir):
        if is_intact_checkpoint(path):
            if warnings:
                warnings.append(f'resuming from the newest intact checkpoint '
                                f'instead: {path}')
            else:
                warnings.append(f'{record} is missing; resuming from the '
                                f'newest intact checkpoint: {path}')
            return path, warnings
        warnings.append(f'skipped {path}: not a complete checkpoint')
    return None, warnings


def build_runner_noting(cfg, notes: List[str]):
    """The runner of ``cfg``, with ``notes`` as WARNINGs at the top of its log.

    mmengine opens the log file inside ``Runner.__init__`` and first writes
    the environment and the whole config; the notes go right before them.
    A config with its own ``runner_type`` gets the notes after that instead.
    """
    from mmengine.runner import Runner

    from .cli import build_runner
    if not notes or 'runner_type' in cfg:
        runner = build_runner(cfg)
        for note in notes:
            runner.logger.warning(note)
        return runner

    class NotingRunner(Runner):

        def _log_env(self, env_cfg):
            for note in notes:
                self.logger.warning(note)
            super()._log_env(env_cfg)

    return NotingRunner.from_cfg(cfg)
