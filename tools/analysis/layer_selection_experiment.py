"""Does the splitting score pick good MoE layers? Train residual-only RMoE
runs with MoE in the top-scored, the bottom-scored and the default blocks,
several seeds each, and compare their losses and mIoU.

    python tools/analysis/layer_selection_experiment.py SCORES_JSON
        --config RMOE_CONFIG --checkpoint DENSE_CKPT [--seeds 0 1 2]
        [--iters 100] [--lr 1e-3] [--loss-batches 8]
        [--work-dir work_dirs/layer_selection_experiment] [--nice 10]

SCORES_JSON is what tools/analysis/select_moe_layers.py wrote for the dense
checkpoint DENSE_CKPT. Every run starts from DENSE_CKPT converted to RMoE
(RMOE_CONFIG with the placement's ``moe_blocks``), trains only residuals and
routers (``RMoEStageHook``, core and heads frozen) for ``--iters``
iterations with the same schedule, then validates. Measured per run: the
training loss of the last logged window, the mean loss on fixed training
batches (eval mode, the same batches for every run and for the dense
starting point) and the validation mIoU. Runs already finished in the work
dir are reused. Prints a table (mean +- std over seeds), writes
``results.json`` and ``results.png`` in the work dir.
"""
import argparse
import glob
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import time

from mmengine.config import DictAction

import rmoe_mm  # noqa: F401
from rmoe_mm.analysis.layer_selection import mean_loss
from rmoe_mm.analysis.runtime import (load_analysis_config, load_model,
                                      seeded_batches)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PLACEMENTS = {
    'top': 'moe_blocks',
    'bottom': 'bottom_moe_blocks',
    'default': 'default_moe_blocks',
}

RUN_CONFIG = """# written by tools/analysis/layer_selection_experiment.py
_base_ = [{base!r}]
model = dict(backbone=dict(moe_blocks={blocks!r}))
optim_wrapper = dict(optimizer=dict(lr={lr!r}))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end={warmup}),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters={iters},
                 val_interval={iters})
default_hooks = dict(
    checkpoint=dict(interval={iters}, max_keep_ckpts=1),
    logger=dict(interval={log_interval}))
custom_hooks = [
    dict(type='RMoEStageHook', stages=[
        dict(name='residual_only', begin=0, frozen=['core', 'heads'])]),
    dict(type='MoEStatsHook'),
    dict(type='IterationSeedHook'),
]
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('scores', help='JSON of select_moe_layers.py')
    parser.add_argument(
        '--config', required=True, help='the RMoE config the runs train')
    parser.add_argument(
        '--checkpoint',
        required=True,
        help='the dense checkpoint every run starts from')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--iters', type=int, default=100)
    parser.add_argument('--lr', type=float, default=1e-3)
    parser.add_argument('--loss-batches', type=int, default=8)
    parser.add_argument(
        '--placements',
        nargs='+',
        choices=list(PLACEMENTS),
        default=list(PLACEMENTS))
    parser.add_argument(
        '--work-dir', default='work_dirs/layer_selection_experiment')
    parser.add_argument(
        '--nice',
        type=int,
        default=0,
        help='niceness added to the training and test processes')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        default={},
        help='override settings of every run (and of the loss batches), '
        'key=value pairs (mmengine DictAction)')
    return parser.parse_args(argv)


def option_args(options):
    """``--cfg-options`` arguments that give the tools ``options`` again."""
    return [f'{key}={value}' for key, value in options.items()]


def last_scalars(work_dir):
    """The last logged training loss and the validation mIoU of a run."""
    files = sorted(
        glob.glob(osp.join(work_dir, '2*', 'vis_data', 'scalars.json')))
    loss, miou = None, None
    for line in open(files[-1]):
        record = json.loads(line)
        if 'loss' in record:
            loss = record['loss']
        if 'mIoU' in record:
            miou = record['mIoU']
    return loss, miou


def train(args, config, seed, work_dir):
    cmd = [
        'nice', '-n',
        str(args.nice), sys.executable,
        osp.join(ROOT, 'tools', 'train.py'), config, '--work-dir', work_dir,
        '--cfg-options', f'load_from={args.checkpoint}',
        f'randomness.seed={seed}', *option_args(args.cfg_options)
    ]
    env = dict(os.environ, PYTHONPATH=ROOT)
    with open(osp.join(work_dir, 'train.out'), 'w') as log:
        subprocess.run(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=True)


def test_miou(args, config, checkpoint, work_dir):
    """Validation mIoU of ``checkpoint`` by tools/test.py."""
    os.makedirs(work_dir, exist_ok=True)
    cmd = [
        'nice', '-n',
        str(args.nice), sys.executable,
        osp.join(ROOT, 'tools', 'test.py'), config, checkpoint, '--work-dir',
        work_dir, *(['--cfg-options', *option_args(args.cfg_options)]
                    if args.cfg_options else [])
    ]
    env = dict(os.environ, PYTHONPATH=ROOT)
    with open(osp.join(work_dir, 'test.out'), 'w') as log:
        subprocess.run(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=True)
    metrics = sorted(glob.glob(osp.join(work_dir, '2*', '2*.json')))
    with open(metrics[-1]) as f:
        return json.loads(f.read().splitlines()[-1]).get('mIoU')


def fixed_batches(cfg, num, seed=1234):
    """Training batches drawn once (the same for every run), the same in
    every invocation."""
    return seeded_batches(cfg, num, seed)


def summarise(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    std = statistics.stdev(values) if len(values) > 1 else 0.
    return statistics.mean(values), std


def plot(results, baseline, path):
    from rmoe_mm.analysis.plots import plt
    metrics = [('fixed_batch_loss', 'loss on fixed training batches'),
               ('train_loss', 'training loss (last window)'),
               ('mIoU', 'validation mIoU')]
    fig, axes = plt.subplots(1, 3, figsize=(9, 2.8))
    names = list(results)
    for ax, (key, label) in zip(axes, metrics):
        for x, name in enumerate(names):
            values = [
                r[key] for r in results[name]['runs'] if r[key] is not None
            ]
            mean, std = summarise(values)
            if mean is None:
                continue
            ax.errorbar(
                x,
                mean,
                yerr=std,
                fmt='o',
                color='tab:blue',
                ms=7,
                capsize=4,
                label='mean +- std' if x == 0 else None)
            ax.plot(
                [x + 0.15] * len(values),
                values,
                'k.',
                ms=4,
                label='seeds' if x == 0 else None)
        if baseline.get(key) is not None:
            ax.axhline(
                baseline[key],
                color='grey',
                ls='--',
                lw=1,
                label='dense start')
            ax.legend(fontsize=7, frameon=False)
        ax.set_xlim(-0.5, len(names) - 0.5)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, fontsize=8)
        ax.set_title(label, fontsize=8)
        ax.tick_params(labelsize=7)
        low = min(
            [
                v for n in names
                for v in [r[key] for r in results[n]['runs']] if v is not None
            ] + ([baseline[key]] if baseline.get(key) is not None else []),
            default=0)
        high = max(
            [
                v for n in names
                for v in [r[key] for r in results[n]['runs']] if v is not None
            ] + ([baseline[key]] if baseline.get(key) is not None else []),
            default=1)
        pad = 0.25 * (high - low) + 1e-6
        ax.set_ylim(low - pad, high + pad)
    fig.tight_layout()
    from rmoe_mm.analysis.plots import _save
    _save(fig, path)


def main(argv=None):
    args = parse_args(argv)
    with open(args.scores) as f:
        scores = json.load(f)
    score_of = {
        (layer['stage'], layer['block']):
        layer[scores['settings']['estimator']]['score'][scores['settings']
                                                        ['normalisation']]
        for layer in scores['layers']
    }
    os.makedirs(args.work_dir, exist_ok=True)
    base = osp.abspath(args.config)
    cfg = load_analysis_config(args.config, args.cfg_options)
    batches = fixed_batches(cfg, args.loss_batches)
    dense_cfg_path = osp.join(args.work_dir, 'dense_start.py')
    with open(dense_cfg_path, 'w') as f:
        f.write(f"_base_ = [{base!r}]\nmodel = dict(backbone=dict("
                "moe_blocks='none'))\n")
    dense = load_model(
        load_analysis_config(dense_cfg_path, args.cfg_options),
        args.checkpoint)
    baseline = dict(fixed_batch_loss=mean_loss(dense, batches))
    baseline_file = osp.join(args.work_dir, 'dense_start', 'metrics.json')
    if not osp.exists(baseline_file):
        miou = test_miou(args, dense_cfg_path, args.checkpoint,
                         osp.dirname(baseline_file))
        with open(baseline_file, 'w') as f:
            json.dump(dict(mIoU=miou), f)
    with open(baseline_file) as f:
        baseline.update(json.load(f))
    print(
        f'dense start: loss on fixed batches '
        f'{baseline["fixed_batch_loss"]:.4f}, mIoU {baseline["mIoU"]}',
        flush=True)

    results, configs = {}, {}
    for name in args.placements:
        blocks = scores[PLACEMENTS[name]]
        configs[name] = osp.join(args.work_dir, f'{name}.py')
        with open(configs[name], 'w') as f:
            f.write(
                RUN_CONFIG.format(
                    base=base,
                    blocks=blocks,
                    lr=args.lr,
                    warmup=min(10, args.iters),
                    iters=args.iters,
                    log_interval=min(20, args.iters)))
        chosen = [(s, b) for s, stage in enumerate(blocks) for b in stage]
        results[name] = dict(
            moe_blocks=blocks,
            score_sum=sum(score_of[block] for block in chosen),
            runs=[])
    # Seed by seed, so that an interrupted experiment is balanced.
    total = len(args.placements) * len(args.seeds)
    done, start = 0, time.time()
    for seed in args.seeds:
        for name in args.placements:
            work_dir = osp.join(args.work_dir, name, f'seed_{seed}')
            os.makedirs(work_dir, exist_ok=True)
            checkpoint = osp.join(work_dir, f'iter_{args.iters}.pth')
            if not osp.exists(checkpoint):
                print(
                    f'[{done + 1}/{total}] training {name} seed {seed} '
                    f'(moe_blocks={results[name]["moe_blocks"]}), log: '
                    f'{work_dir}/train.out',
                    flush=True)
                train(args, configs[name], seed, work_dir)
            train_loss, miou = last_scalars(work_dir)
            model = load_model(
                load_analysis_config(configs[name], args.cfg_options),
                checkpoint)
            run = dict(
                seed=seed,
                train_loss=train_loss,
                mIoU=miou,
                fixed_batch_loss=mean_loss(model, batches))
            results[name]['runs'].append(run)
            done += 1
            elapsed = time.time() - start
            print(
                f'[{done}/{total}] {name} seed {seed}: {run}  '
                f'elapsed {elapsed:.0f} s, ETA '
                f'{elapsed / done * (total - done):.0f} s',
                flush=True)

    print(f'\n{"placement":<9} {"moe_blocks":<24} {"score sum":>9} '
          f'{"fixed-batch loss":>18} {"train loss":>16} {"mIoU":>14}')
    for name, result in results.items():
        cells = []
        for key in ('fixed_batch_loss', 'train_loss', 'mIoU'):
            mean, std = summarise([r[key] for r in result['runs']])
            result[key] = dict(mean=mean, std=std)
            cells.append('-' if mean is None else f'{mean:.4f} +- {std:.4f}'
                         if key != 'mIoU' else f'{mean:.2f} +- {std:.2f}')
        print(f'{name:<9} {str(result["moe_blocks"]):<24} '
              f'{result["score_sum"]:>9.4f} {cells[0]:>18} {cells[1]:>16} '
              f'{cells[2]:>14}')
    print(f'dense start: fixed-batch loss {baseline["fixed_batch_loss"]:.4f}'
          f', mIoU {baseline["mIoU"]:.2f}')
    out = dict(
        scores=args.scores,
        config=args.config,
        checkpoint=args.checkpoint,
        seeds=args.seeds,
        iters=args.iters,
        lr=args.lr,
        baseline=baseline,
        placements=results)
    with open(osp.join(args.work_dir, 'results.json'), 'w') as f:
        json.dump(out, f, indent=2)
    plot(results, baseline, osp.join(args.work_dir, 'results.png'))
    print(f'wrote {args.work_dir}/results.json and results.png')
    return out


if __name__ == '__main__':
    main()
