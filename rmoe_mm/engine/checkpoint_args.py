"""The tools' checkpoint options and their clean exit on user errors.

``--trust-checkpoint PATH`` (repeatable) trusts one file or URL by name for
full unpickling; ``--allow-partial-load`` lets a checkpoint that does not
fit load anyway. Both are logged at WARNING when they take effect
(:mod:`rmoe_mm.checkpoint`). :func:`user_errors` turns the errors a user
fixes by editing a path or a config (missing paths, refused or mismatched
checkpoints, empty datasets) into one message and exit code 1 instead of a
traceback.
"""
import argparse
import logging
import sys
import traceback
from contextlib import contextmanager

from mmengine.logging import MMLogger, print_log

from rmoe_mm.checkpoint import (ENV_TRUSTED, CheckpointGlobalRefused,
                                trust_checkpoint)
from rmoe_mm.checkpoint.fit import (ENV_ALLOW_PARTIAL, CheckpointMismatchError,
                                    allow_partial_loads)
from rmoe_mm.converters.common import CheckpointLayoutError
from .preflight import PreflightError

#: Errors whose message says all a user needs; no traceback.
USER_ERRORS = (PreflightError, CheckpointGlobalRefused,
               CheckpointMismatchError, CheckpointLayoutError)


def add_checkpoint_args(parser: argparse.ArgumentParser) -> None:
    """``--trust-checkpoint`` and ``--allow-partial-load``."""
    parser.add_argument(
        '--trust-checkpoint',
        action='append',
        default=[],
        metavar='PATH',
        help='fully unpickle this checkpoint (exact path or URL) if the safe '
        'loader refuses it; it can run code, so only for files you trust '
        f'(also: {ENV_TRUSTED}). Repeatable')
    parser.add_argument(
        '--allow-partial-load',
        action='store_true',
        help='load a checkpoint that does not fit the model (missing, '
        'unexpected or differently shaped tensors) anyway, with a WARNING '
        f'(also: {ENV_ALLOW_PARTIAL}=1)')


def apply_checkpoint_args(args: argparse.Namespace) -> None:
    """Make the options of :func:`add_checkpoint_args` take effect."""
    for name in args.trust_checkpoint:
        trust_checkpoint(name)
        print_log(
            f'--trust-checkpoint {name}: it may be fully unpickled '
            '(it can run code) if the safe loader refuses it',
            logger='current',
            level=logging.WARNING)
    if args.allow_partial_load:
        allow_partial_loads(True)
        print_log(
            '--allow-partial-load: checkpoints that do not fit the '
            'model load partially, with a WARNING',
            logger='current',
            level=logging.WARNING)


def _empty_dataset(err: BaseException) -> bool:
    """mmengine's ``np.concatenate`` over the samples of an empty dataset."""
    if not isinstance(err, ValueError) or \
            'need at least one array to concatenate' not in str(err):
        return False
    frames = traceback.extract_tb(err.__traceback__)
    return any(frame.name == '_serialize_data' for frame in frames)


def _report(message: str) -> None:
    """To stderr, and to the runner's log file once there is one."""
    print(message, file=sys.stderr)
    logger = MMLogger.get_current_instance()
    record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0,
                               message, None, None)
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


@contextmanager
def user_errors():
    """Exit with code 1 and the message alone on :data:`USER_ERRORS`."""
    try:
        yield
    except USER_ERRORS as err:
        _report(f'{type(err).__name__}: {err}')
        sys.exit(1)
    except ValueError as err:
        if not _empty_dataset(err):
            raise
        _report('EmptyDataset: a dataset has no samples (mmengine found '
                'nothing to serialize): check its data_root, data_prefix, '
                'ann_file and filter_cfg; tools/misc/make_toy_data.py writes '
                'small datasets (docs/toy_data.md).')
        sys.exit(1)
