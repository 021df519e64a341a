"""Train a segmentor, detector or classifier (mmseg / mmdet / mmpretrain CLI).

    python tools/train.py CONFIG [--work-dir W] [--resume [CKPT]] [--amp]
        [--cfg-options k=v ...] [--launcher {none,pytorch,slurm,mpi}]
        [--trust-checkpoint PATH] [--allow-partial-load]

Works for ``default_scope='mmseg'``, ``'mmdet'`` and ``'mmpretrain'``
configs alike (the upstream classification stage is mmpretrain's). Importing
``rmoe_mm`` routes every checkpoint load through its safe loader, so
``--resume`` and ``load_from`` work on torch >= 2.6 without unpickling
arbitrary objects. Before the runner is built, the config's data and
checkpoint paths are checked (one message per missing path); a checkpoint
that does not fit the model stops the run (``--allow-partial-load`` to
accept it); ``--resume`` without a path says what it resumes from, falling
back to the newest intact checkpoint when ``last_checkpoint`` is empty or
dangling.
"""
import argparse
import os

from mmengine.config import DictAction

import rmoe_mm  # noqa: F401  registers modules, installs the safe loader
from rmoe_mm.checkpoint.fit import guard_model_loads
from rmoe_mm.engine import (enable_amp, load_config, run_then_destroy,
                            setup_distributed)
from rmoe_mm.engine.checkpoint_args import (add_checkpoint_args,
                                            apply_checkpoint_args, user_errors)
from rmoe_mm.engine.preflight import preflight
from rmoe_mm.engine.resume import build_runner_noting, find_resume_checkpoint


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train a segmentor, detector or classifier')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from this checkpoint; without a path, from the latest '
        'checkpoint in the work directory')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='mixed precision: fp16 + dynamic loss scale on GPU, bf16 '
        'autocast on CPU')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, key=value pairs (mmengine DictAction)')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or
    # --local_rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    add_checkpoint_args(parser)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def build_cfg(args):
    """The config, and warnings about what ``--resume`` resumes from."""
    cfg = load_config(args.config, args.cfg_options, args.work_dir)
    if args.amp:
        enable_amp(cfg)
    notes = []
    # resume: an explicit checkpoint > the latest one in work_dir
    if args.resume is not None and args.resume != 'auto':
        cfg.resume = True
        cfg.load_from = args.resume
    elif args.resume == 'auto' or (cfg.get('resume')
                                   and not cfg.get('load_from')):
        found, notes = find_resume_checkpoint(cfg.work_dir)
        if found:
            cfg.resume, cfg.load_from = True, found
        else:
            cfg.resume = False  # the config's load_from, if any, still loads
            start = f"load_from={cfg.load_from}" if cfg.get('load_from') \
                else 'the initial weights'
            notes.append(f'--resume: nothing to resume in {cfg.work_dir} (no '
                         'intact last_checkpoint, iter_*.pth or epoch_*.pth); '
                         f'training starts from {start}')
    return cfg, notes


def main(argv=None):
    args = parse_args(argv)
    with user_errors():
        apply_checkpoint_args(args)
        cfg, notes = build_cfg(args)
        preflight(cfg, 'train', args.config)
        # The process group (gloo without CUDA) and the DDP wrapper.
        setup_distributed(cfg, args.launcher)
        # The notes lead the log, before the environment and config dump.
        runner = build_runner_noting(cfg, notes)
        # --resume and load_from must fit the model (dense -> RMoE allowed
        # for load_from); refused before any tensor or optimizer state moves.
        guard_model_loads(runner.model,
                          'resume' if cfg.get('resume') else 'load_from')
        run_then_destroy(runner.train)


if __name__ == '__main__':
    main()
