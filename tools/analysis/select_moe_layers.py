"""Rank a backbone's FFNs by how much turning each into experts would lower
the loss (first-order splitting score), and propose ``moe_blocks``.

    python tools/analysis/select_moe_layers.py CONFIG CHECKPOINT
        [--num-layers N] [--num-experts E] [--batches B] [--out scores.json]
        [--grouping {router,kmeans}] [--estimator {split-half,plain}]
        [--normalisation {energy,total,params}] [--batch-size BS]
        [--seed S] [--device DEV] [--cfg-options k=v ...]

CHECKPOINT is a whole-model checkpoint of CONFIG (what tools/train.py
saves), dense or RMoE; with a dense checkpoint and an RMoE config the
config's dense twin is scored. The data are B batches of the config's
training data loader. Writes a ranked table and a ``moe_blocks=[...]``
snippet to stdout, the numbers to ``--out`` (JSON) and a bar chart beside it
(same name, ``.png``). The score is defined in docs/analysis.md and
rmoe_mm/analysis/splitting.py.
"""
import argparse
import json
import math
import os
import os.path as osp
import sys
import time

from mmengine.config import DictAction

import rmoe_mm  # noqa: F401  registers modules, checkpoint allow-list
from rmoe_mm.analysis.layer_selection import measure_splitting
from rmoe_mm.analysis.plots import plot_splitting_scores
from rmoe_mm.analysis.probes import GROUPINGS, backbone_depths
from rmoe_mm.analysis.runtime import (default_device, load_analysis_config,
                                      load_model, seeded_batches)
from rmoe_mm.analysis.splitting import (ESTIMATORS, NORMALISATIONS,
                                        moe_blocks_of, top_blocks)
from rmoe_mm.moe import MoEConfig, default_moe_blocks, rmoe_layers


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument(
        '--num-layers',
        type=int,
        help='FFNs to turn into MoE (default: as many as the default '
        'placement has)')
    parser.add_argument(
        '--num-experts',
        type=int,
        help="groups per dense FFN (default: the config's moe_cfg, else 8)")
    parser.add_argument(
        '--batches',
        type=int,
        default=16,
        help='training batches to measure on (>= 2)')
    parser.add_argument(
        '--batch-size',
        type=int,
        help="override the config's training batch size")
    parser.add_argument(
        '--out',
        help='JSON path (default: work_dirs/'
        'select_moe_layers/<config>/scores.json)')
    parser.add_argument('--grouping', choices=GROUPINGS, default='router')
    parser.add_argument(
        '--estimator', choices=ESTIMATORS, default='split-half')
    parser.add_argument(
        '--normalisation', choices=NORMALISATIONS, default='energy')
    parser.add_argument(
        '--seed',
        type=int,
        default=0,
        help='data order and augmentations, dense routers and k-means')
    parser.add_argument('--device', default=default_device())
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, key=value pairs (mmengine DictAction)')
    return parser.parse_args(argv)


def backbone_moe_cfg(cfg, model) -> MoEConfig:
    """The MoE settings the layers have, or the config asks for."""
    for _, layer in rmoe_layers(model):
        return layer.moe_cfg
    return MoEConfig.build(cfg.model.backbone.get('moe_cfg', None))


def print_table(scores, chosen, args) -> None:
    key = (args.estimator, args.normalisation)
    ranked = sorted(
        scores,
        key=lambda s: -s.score(*key)
        if not math.isnan(s.score(*key)) else math.inf)
    header = (f'{"rank":>4}  {"block":<7} {"kind":<5} {"tokens":>8} '
              f'{"groups":>6}  {"score":>9}  {"fc1":>9}  {"fc2":>9}  '
              f'{"plain":>9}  chosen')
    print(f'\nSplitting score ({args.estimator} estimate, '
          f'{args.normalisation} normalisation, {args.grouping} groups):')
    print(header)
    print('-' * len(header))
    for rank, item in enumerate(ranked, start=1):
        fc = [
            item.gains[args.estimator][f].score(args.normalisation)
            for f in ('fc1', 'fc2')
        ]
        print(f'{rank:>4}  {item.label:<7} '
              f'{"MoE" if item.is_moe else "dense":<5} '
              f'{sum(item.group_sizes):>8} {item.num_groups:>6}  '
              f'{item.score(*key):>9.4g}  {fc[0]:>9.4g}  {fc[1]:>9.4g}  '
              f'{item.score("plain", args.normalisation):>9.4g}  '
              f'{"*" if (item.stage, item.block) in chosen else ""}')


def main(argv=None):
    args = parse_args(argv)
    cfg = load_analysis_config(args.config, args.cfg_options)
    model = load_model(cfg, args.checkpoint, args.device)
    depths = backbone_depths(model.backbone)
    moe_cfg = backbone_moe_cfg(cfg, model)
    num_experts = args.num_experts or moe_cfg.num_experts
    default_blocks = default_moe_blocks(depths)
    num_layers = args.num_layers if args.num_layers is not None else sum(
        map(len, default_blocks))
    start = time.time()
    batches = seeded_batches(cfg, args.batches, args.seed, 'train',
                             args.batch_size)
    scores = measure_splitting(
        model,
        batches,
        grouping=args.grouping,
        num_experts=num_experts,
        router_type=moe_cfg.router,
        seed=args.seed,
        tag='select_moe_layers')
    seconds = time.time() - start
    key = (args.estimator, args.normalisation)
    by_block = {(s.stage, s.block): s.score(*key) for s in scores}
    chosen = top_blocks(by_block, num_layers)
    moe_blocks = moe_blocks_of(chosen, depths)
    print_table(scores, set(chosen), args)

    out = args.out or osp.join('work_dirs', 'select_moe_layers',
                               osp.splitext(osp.basename(args.config))[0],
                               'scores.json')
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    png = osp.splitext(out)[0] + '.png'
    labels = [s.label for s in scores]
    plot_splitting_scores(
        labels, [s.stage for s in scores], [s.score(*key) for s in scores],
        png,
        plain=[s.score('plain', args.normalisation)
               for s in scores] if args.estimator != 'plain' else None,
        selected=[s.label for s in scores if (s.stage, s.block) in chosen],
        current_moe=[s.label for s in scores if s.is_moe],
        default=[
            s.label for s in scores if s.block in default_blocks[s.stage]
        ],
        title=f'{osp.basename(args.config)}: {args.batches} batches, '
        f'{args.grouping} groups, E={num_experts}',
        ylabel=f'splitting score ({args.normalisation})')
    result = dict(
        config=args.config,
        checkpoint=args.checkpoint,
        settings=dict(
            batches=args.batches,
            grouping=args.grouping,
            estimator=args.estimator,
            normalisation=args.normalisation,
            num_experts=num_experts,
            router=moe_cfg.router,
            seed=args.seed,
            num_layers=num_layers),
        depths=depths,
        default_moe_blocks=default_blocks,
        moe_blocks=moe_blocks,
        bottom_moe_blocks=moe_blocks_of(
            top_blocks(by_block, num_layers, lowest=True), depths),
        seconds=seconds,
        layers=[s.to_dict() for s in scores],
        png=png)
    with open(out, 'w') as f:
        json.dump(result, f, indent=2)
    print(f'\n# top {num_layers} FFNs by splitting score '
          f'({osp.basename(args.config)})')
    print(f'model = dict(backbone=dict(moe_blocks={moe_blocks}))')
    print(f'\nscores: {out}\nchart:  {png}', file=sys.stderr)
    return result


if __name__ == '__main__':
    main()
