"""Time one training iteration of each pipeline stage against the dense model.

Builds the dense model and the RMoE model from two configs and times full
training iterations (data preprocessing, forward, backward, optimizer step,
``model.train_step`` as the runner calls it) on one fixed batch of the dense
config's train dataloader, for three variants:

- ``dense``: the dense model, everything trains;
- ``rmoe``: the RMoE model, everything trains (RMoE-D, the full-MoE upper
  bound, the finetune stage of RMoE-I);
- ``rmoe_frozen_core``: the RMoE model with the backbone core frozen as
  :class:`~rmoe_mm.hooks.RMoEStageHook` freezes it (RMoE-I's intermediate
  stage).

Repetitions are interleaved (dense, rmoe, frozen, dense, ...), so that load
from other processes hits all variants alike; the script prints median times
and the ratios to dense. Example (toy ADE20K)::

    python tools/analysis/pipeline_iter_time.py \\
        configs/toy/swin_upernet_toy_ade20k.py \\
        configs/toy/rmoe_swin_upernet_toy_ade20k.py --repeats 15
"""
import argparse
import statistics
import time

import torch
from mmengine.config import Config, DictAction
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS, init_default_scope
from mmengine.runner import Runner

import rmoe_mm  # noqa: F401  registers the RMoE modules
from rmoe_mm.moe import split_parameters


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('dense_config')
    parser.add_argument('rmoe_config')
    parser.add_argument(
        '--repeats',
        type=int,
        default=15,
        help='timed iterations per variant (interleaved)')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument(
        '--threads',
        type=int,
        default=None,
        help='torch threads (default: torch default)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='overrides applied to both configs')
    return parser.parse_args()


def load_cfg(path, options):
    cfg = Config.fromfile(path)
    if options:
        cfg.merge_from_dict(options)
    return cfg


def build_trainer(cfg, freeze_core=False):
    """The model and optimizer wrapper of ``cfg``, built as the runner does
    (optimizer first, then the freezing, as RMoEStageHook does)."""
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    if freeze_core:
        for _, param in split_parameters(model)['core']:
            param.requires_grad_(False)
    return model, optim_wrapper


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dense_cfg = load_cfg(args.dense_config, args.cfg_options)
    rmoe_cfg = load_cfg(args.rmoe_config, args.cfg_options)
    init_default_scope(dense_cfg.get('default_scope', 'mmseg'))
    batch = next(iter(Runner.build_dataloader(dense_cfg.train_dataloader)))
    variants = {
        'dense': build_trainer(dense_cfg),
        'rmoe': build_trainer(rmoe_cfg),
        'rmoe_frozen_core': build_trainer(rmoe_cfg, freeze_core=True),
    }
    times = {name: [] for name in variants}
    for step in range(args.warmup + args.repeats):
        for name, (model, optim_wrapper) in variants.items():
            start = time.perf_counter()
            model.train_step(batch, optim_wrapper)
            if step >= args.warmup:
                times[name].append(time.perf_counter() - start)
    dense = statistics.median(times['dense'])
    print(f'{"variant":<18} {"median s/iter":>14} {"ratio to dense":>15}')
    for name, values in times.items():
        median = statistics.median(values)
        print(f'{name:<18} {median:>14.4f} {median / dense:>15.3f}')


if __name__ == '__main__':
    main()
