"""Test (and evaluate) a segmentor, detector or classifier checkpoint.

    python tools/test.py CONFIG CHECKPOINT [--work-dir W] [--out OUT]
        [--show-dir DIR] [--cfg-options k=v ...] [--launcher ...]
        [--trust-checkpoint PATH] [--allow-partial-load]

The command line of mmseg's / mmdet's / mmpretrain's 1.x ``tools/test.py``.
``--out`` follows the config's library: for mmseg a directory of predicted
label maps, for mmdet a ``.pkl`` file of raw detections, for mmpretrain a
``.pkl`` file of the predictions. CHECKPOINT may be a path or any URL scheme
mmengine knows; it is loaded by rmoe_mm's safe loader and must fit the whole
model (a missing decode head would mean random predictions): anything else
stops the test unless ``--allow-partial-load``.
"""
import argparse
import os

from mmengine.config import DictAction

import rmoe_mm  # noqa: F401  registers modules, installs the safe loader
from rmoe_mm.checkpoint.fit import guard_model_loads
from rmoe_mm.engine import (build_runner, load_config, run_then_destroy,
                            setup_distributed)
from rmoe_mm.engine.checkpoint_args import (add_checkpoint_args,
                                            apply_checkpoint_args, user_errors)
from rmoe_mm.engine.preflight import preflight


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Test a segmentor, detector or classifier')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir', help='the dir to save the evaluation metrics (json)')
    parser.add_argument(
        '--out',
        help='mmseg: directory for predicted label maps; '
        'mmdet: .pkl file for raw results; mmpretrain: .pkl file of the '
        'predictions')
    parser.add_argument('--show', action='store_true', help='show results')
    parser.add_argument(
        '--show-dir', help='directory where painted images will be saved')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
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
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    add_checkpoint_args(parser)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


LIBRARIES = ('mmseg', 'mmdet', 'mmpretrain')


def library_of(cfg) -> str:
    """'mmseg', 'mmdet' or 'mmpretrain', from the config's default scope."""
    scope = cfg.get('default_scope')
    if scope not in LIBRARIES:
        raise ValueError(f'default_scope must be one of {LIBRARIES}, got '
                         f'{scope!r}')
    return scope


def enable_visualization(cfg, args) -> None:
    hooks = cfg.default_hooks
    if 'visualization' not in hooks:
        raise RuntimeError(
            "--show/--show-dir need default_hooks.visualization="
            "dict(type='...VisualizationHook') in the config")
    hook = hooks['visualization']
    library = library_of(cfg)
    # mmpretrain's VisualizationHook is switched on by `enable`, not `draw`
    hook['enable' if library == 'mmpretrain' else 'draw'] = True
    if args.show:
        hook['show'] = True
        hook['wait_time'] = args.wait_time
    if args.show_dir:
        if library == 'mmdet':
            hook['test_out_dir'] = args.show_dir
        elif library == 'mmpretrain':
            hook['out_dir'] = args.show_dir
        else:
            cfg.visualizer['save_dir'] = args.show_dir


def build_cfg(args):
    cfg = load_config(args.config, args.cfg_options, args.work_dir)
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        enable_visualization(cfg, args)
    if args.out is not None and library_of(cfg) == 'mmseg':
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True
    return cfg


def main(argv=None):
    args = parse_args(argv)
    with user_errors():
        apply_checkpoint_args(args)
        cfg = build_cfg(args)
        library = library_of(cfg)
        dump = args.out is not None and library in ('mmdet', 'mmpretrain')
        if dump and not args.out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out for {library} must be a .pkl file, got '
                             f'{args.out!r}')
        preflight(cfg, 'test', args.config)
        # The process group (gloo without CUDA) and the DDP wrapper.
        setup_distributed(cfg, args.launcher)
        runner = build_runner(cfg)
        guard_model_loads(runner.model, 'test')
        if dump and library == 'mmdet':
            from mmdet.evaluation import DumpDetResults
            runner.test_evaluator.metrics.append(
                DumpDetResults(out_file_path=args.out))
        elif dump:
            from mmengine.evaluator import DumpResults
            runner.test_evaluator.metrics.append(
                DumpResults(out_file_path=args.out))
        return run_then_destroy(runner.test)


if __name__ == '__main__':
    main()
