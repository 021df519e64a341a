"""Train a segmentor, detector or classifier (mmseg / mmdet / mmpretrain CLI).

    python tools/train.py CONFIG [--work-dir W] [--resume [CKPT]] [--amp]
        [--cfg-options k=v ...] [--launcher {none,pytorch,slurm,mpi}]

Works for ``default_scope='mmseg'``, ``'mmdet'`` and ``'mmpretrain'``
configs alike (the upstream classification stage is mmpretrain's). Importing
``rmoe_mm`` registers its modules and the checkpoint allow-list, so
``--resume`` and ``load_from`` work on torch >= 2.6.
"""
import argparse
import os

from mmengine.config import DictAction

import rmoe_mm  # noqa: F401  registers modules, installs the checkpoint allow-list
from rmoe_mm.engine import build_runner, enable_amp, load_config, run_then_destroy


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train a segmentor, detector or classifier')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from this checkpoint; without a path, from the latest '
        'checkpoint in the work directory')
    parser.add_argument(
        '--amp', action='store_true', default=False,
        help='mixed precision: fp16 + dynamic loss scale on GPU, bf16 autocast on CPU')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value pairs (mmengine DictAction)')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or --local_rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def build_cfg(args):
    cfg = load_config(args.config, args.cfg_options, args.launcher, args.work_dir)
    if args.amp:
        enable_amp(cfg)
    # resume: an explicit checkpoint > the latest one in work_dir
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def main(argv=None):
    args = parse_args(argv)
    runner = build_runner(build_cfg(args))
    run_then_destroy(runner.train)


if __name__ == '__main__':
    main()
