"""Run chosen pipelines of a task for several seeds and compare their metrics.

    python tools/analysis/compare_pipelines.py SPEC [--pipelines P ...]
        [--seeds 0 1 2] [--work-dir W] [--threads N] [--cfg-options k=v ...]

SPEC is a pipeline spec (``configs/pipelines/specs/``, format in
``rmoe_mm/engine/pipeline_spec.py``): the training runs (stages) of each
pipeline and which checkpoint each starts from. Every stage runs as
``tools/train.py CONFIG --work-dir W/<stage>/<seed>`` (shared stages once,
with the first seed, under ``W/<stage>/shared``), its whole output in
``console.log`` there; the console shows one progress line per run
(iteration, ETA, loss). A run whose ``result.json`` exists is reused (unless
``--rerun``), so an interrupted comparison continues where it stopped;
``--report-only`` runs nothing and summarises the runs that exist, naming
the seeds each pipeline lacks. The
metric of a pipeline is the validation metric its last stage reports at its
last iteration.

Writes ``W/comparison.json`` (per run: stage, seed, config, checkpoint,
metrics, seconds; per pipeline: mean, sample std and values over seeds) and
``W/comparison.png`` (the metric per pipeline, one point per seed, and the
training-loss curves of every run), and prints a table.

``--cfg-options`` override the spec, e.g.
``stages.dense.options.train_cfg.max_iters=50``.
"""
import argparse
import importlib.util
import json
import os
import os.path as osp
import re
import statistics
import subprocess
import sys
import time
import warnings
from glob import glob

from mmengine.config import DictAction

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, REPO_ROOT)  # rmoe_mm of this checkout, also when run
from rmoe_mm.engine.pipeline_spec import PipelineSpec  # noqa: E402
from rmoe_mm.engine.pipeline_spec import \
    pretrained_checkpoint_keys  # noqa: E402

ITER_LINE = re.compile(r'Iter\(train\) \[\s*(\d+)/(\d+)\].*?eta: (\S+)')
LOSS = re.compile(r'\sloss: ([\d.eE+-]+|nan|inf)')
STAGE = re.compile(r"RMoE stage '([^']+)'")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('spec', help='pipeline spec (configs/pipelines/specs)')
    parser.add_argument(
        '--pipelines', nargs='+', help='pipelines to run (default: every one)')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0])
    parser.add_argument('--work-dir', default='work_dirs/compare_pipelines')
    parser.add_argument(
        '--threads',
        type=int,
        default=None,
        help='OMP/MKL threads of each run (default: as the '
        'environment says)')
    parser.add_argument(
        '--data-root',
        default='data',
        help='where the spec\'s toy datasets are written')
    parser.add_argument(
        '--log-every',
        type=float,
        default=60.,
        help='seconds between progress lines when the '
        'console is not a terminal')
    parser.add_argument(
        '--rerun',
        action='store_true',
        help='run every stage again, even one whose '
        'result.json exists')
    parser.add_argument(
        '--report-only',
        action='store_true',
        help='run nothing: table, JSON and PNG of the runs whose '
        'result.json exists (each pipeline over the seeds it has)')
    parser.add_argument('--title', default=None, help='title of the PNG')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='overrides merged into the spec')
    return parser.parse_args(argv)


# ------------------------------------------------------------------ runs
def run_key(spec, stage, seed):
    """``(stage, seed)``; shared stages (run once) have seed None."""
    return stage, None if spec.stages[stage]['shared'] else seed


def run_dir(work_dir, spec, stage, seed):
    shared = spec.stages[stage]['shared']
    return osp.join(work_dir, stage, 'shared' if shared else f'seed_{seed}')


def last_checkpoint(work_dir):
    path = osp.join(work_dir, 'last_checkpoint')
    if not osp.exists(path):
        raise FileNotFoundError(f'{work_dir} has no last_checkpoint: the run '
                                f'saved none (see {work_dir}/console.log)')
    return open(path).read().strip()


def scalars(work_dir):
    """Every record of the run's newest ``vis_data/scalars.json``."""
    files = sorted(glob(osp.join(work_dir, '2*', 'vis_data', 'scalars.json')))
    if not files:
        return []
    with open(files[-1]) as f:
        return [json.loads(line) for line in f if line.strip()]


def final_metrics(records):
    """The run's last validation record: the last one without training
    keys (``loss``, ``lr``) or MoE statistics."""
    for record in reversed(records):
        if 'loss' in record or 'lr' in record or any(
                k.startswith('moe/') for k in record):
            continue
        return {
            k: v
            for k, v in record.items()
            if k not in ('step', 'time', 'data_time')
        }
    return {}


def loss_curve(records):
    return [(r['step'], r['loss']) for r in records if 'loss' in r]


class Progress:
    """One line per run: rewritten in place on a terminal, else printed
    every ``every`` seconds and at the end."""

    def __init__(self, label, every):
        self.label, self.every = label, every
        self.tty = sys.stdout.isatty()
        self.start = self.last_print = time.time()
        self.state = 'starting'

    def update(self, console_log):
        if not osp.exists(console_log):
            return
        with open(console_log, errors='replace') as f:
            text = f.read()
        iters = ITER_LINE.findall(text)
        if iters:
            i, n, eta = iters[-1]
            losses = LOSS.findall(text)
            stage = STAGE.findall(text)
            self.state = (f'iter {int(i):>5}/{n}  eta {eta}  loss '
                          f'{losses[-1] if losses else "-"}' +
                          (f'  [{stage[-1]}]' if stage else ''))
        elif 'Iter(val)' in text:
            self.state = 'validating'
        self.show()

    def show(self, final=None):
        elapsed = time.time() - self.start
        line = f'{self.label:<44} {final or self.state}  ({elapsed:.0f} s)'
        if self.tty:
            sys.stdout.write('\r' + line[:160].ljust(160) +
                             ('\n' if final else ''))
            sys.stdout.flush()
        elif final or (self.state != 'starting'
                       and time.time() - self.last_print >= self.every):
            print(line, flush=True)
            self.last_print = time.time()


def train(config, work_dir, options, env, label, every):
    """``tools/train.py config`` into ``work_dir``, output to console.log."""
    os.makedirs(work_dir, exist_ok=True)
    console = osp.join(work_dir, 'console.log')
    cmd = [
        sys.executable,
        osp.join(REPO_ROOT, 'tools', 'train.py'), config, '--work-dir',
        work_dir
    ]
    if options:
        cmd += ['--cfg-options'] + [f'{k}={v}' for k, v in options.items()]
    progress = Progress(label, every)
    start = time.time()
    with open(console, 'w') as out:
        out.write(' '.join(cmd) + '\n')
        out.flush()
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        while proc.poll() is None:
            time.sleep(1.)
            progress.update(console)
    seconds = time.time() - start
    if proc.returncode != 0:
        progress.show(final=f'FAILED (exit {proc.returncode})')
        with open(console, errors='replace') as f:
            tail = f.read()[-3000:]
        raise RuntimeError(f'{label} failed; last output of {console}:\n'
                           f'{tail}')
    progress.update(console)
    progress.show(final=progress.state.split('  eta')[0] + '  done')
    return seconds


def format_option(value):
    """A value as ``--cfg-options`` (mmengine's DictAction) parses it."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, bool):
        return str(value)
    return json.dumps(value, separators=(',', ':'))


def collect_stage(spec, stage, seed, args, results):
    """The result of ``stage`` for ``seed`` if it ran, else None."""
    key = run_key(spec, stage, seed)
    result_file = osp.join(
        run_dir(args.work_dir, spec, stage, seed), 'result.json')
    if key not in results and osp.exists(result_file):
        with open(result_file) as f:
            results[key] = json.load(f)
    return results.get(key)


def run_stage(spec, stage, seed, args, env, results):
    """Run ``stage`` for ``seed`` (and what it starts from) unless done."""
    key = run_key(spec, stage, seed)
    if key in results:
        return results[key]
    info = spec.stages[stage]
    parent = None
    if info['init_from'] is not None:
        parent = run_stage(spec, info['init_from'], seed, args, env, results)
    work_dir = run_dir(args.work_dir, spec, stage, seed)
    result_file = osp.join(work_dir, 'result.json')
    if osp.exists(result_file) and not args.rerun:
        with open(result_file) as f:
            result = json.load(f)
        print(f'{stage} ({osp.basename(work_dir)}): done before, reused '
              f'({result_file})')
    else:
        from mmengine.config import Config
        options = {'randomness.seed': seed}
        if parent is not None:
            cfg = Config.fromfile(info['config'], import_custom_modules=False)
            keys = pretrained_checkpoint_keys(cfg.model)
            if not keys:
                raise ValueError(
                    f'stage {stage!r} starts from {info["init_from"]!r}, but '
                    f'{info["config"]} has no init_cfg with a checkpoint to '
                    'point at it')
            options.update({k: parent['checkpoint'] for k in keys})
        options.update(info['options'])
        options = {k: format_option(v) for k, v in options.items()}
        label = f'{stage} [{osp.basename(work_dir)}]'
        seconds = train(info['config'], work_dir, options, env, label,
                        args.log_every)
        records = scalars(work_dir)
        result = dict(
            stage=stage,
            seed=key[1],
            config=info['config'],
            init_from=info['init_from'],
            init_checkpoint=parent['checkpoint'] if parent else None,
            work_dir=work_dir,
            checkpoint=last_checkpoint(work_dir),
            metrics=final_metrics(records),
            seconds=seconds,
            options=options)
        with open(result_file, 'w') as f:
            json.dump(result, f, indent=2)
    results[key] = result
    return result


# --------------------------------------------------------------- summary
def summarise(spec, pipelines, seeds, results, metric_keys):
    """Per pipeline: metrics over the seeds whose whole chain ran
    (``seeds``), and the ``missing_seeds``."""
    summary = {}
    for name in pipelines:
        chain = spec.chain(name)
        done = [
            s for s in seeds if all(
                run_key(spec, stage, s) in results for stage in chain)
        ]
        last = [results[run_key(spec, chain[-1], s)] for s in done]
        metrics = {}
        for key in metric_keys:
            values = [r['metrics'].get(key) for r in last]
            values = [v for v in values if v is not None]
            if not values:
                continue
            metrics[key] = dict(
                mean=statistics.mean(values),
                std=statistics.stdev(values) if len(values) > 1 else 0.,
                values=values)
        own = [results[run_key(spec, s, seed)] for s in chain for seed in done]
        summary[name] = dict(
            stages=chain,
            seeds=done,
            missing_seeds=[s for s in seeds if s not in done],
            metrics=metrics,
            seconds_per_seed=[
                sum(results[run_key(spec, s, seed)]['seconds'] for s in chain)
                for seed in done
            ],
            runs=sorted({r['work_dir']
                         for r in own}))
    return summary


def print_table(summary, metric_keys):
    """Mean +- std per pipeline and metric; 3 decimals for metrics in [0, 1]
    (COCO AP), 2 for percentages (mIoU)."""
    head = f'{"pipeline":<24}{"seeds":>6}' + ''.join(
        f'{k:>24}' for k in metric_keys) + '   values per seed'
    print('\n' + head + '\n' + '-' * len(head))
    for name, s in summary.items():
        cells = ''
        per_seed = []
        for key in metric_keys:
            m = s['metrics'].get(key)
            if not m:
                cells += f'{"-":>24}'
                continue
            d = 3 if max(abs(v) for v in m['values']) <= 1 else 2
            std = f'{m["std"]:>5.{d}f}' if len(m['values']) > 1 else \
                f'{"n/a":>5}'  # one seed: no spread measured
            cells += f'{m["mean"]:>15.{d}f} +- {std}'
            per_seed.append(', '.join(f'{v:.{d}f}' for v in m['values']))
        print(f'{name:<24}{len(s["seeds"]):>6}{cells}   '
              f'{" | ".join(per_seed)}')
    for name, s in summary.items():
        if s['missing_seeds']:
            print(f'{name}: no result for seed(s) '
                  f'{", ".join(map(str, s["missing_seeds"]))}')


def plot(summary, spec, results, metric_keys, path, title):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    names = list(summary)
    cols = len(metric_keys) + 2
    fig, axes = plt.subplots(1, cols, figsize=(5 * cols, 4.2))
    colours = plt.get_cmap('tab10')
    for ax, key in zip(axes, metric_keys):
        for i, name in enumerate(names):
            m = summary[name]['metrics'].get(key)
            if not m:
                continue
            xs = [
                i + 0.08 * (j - (len(m['values']) - 1) / 2)
                for j in range(len(m['values']))
            ]
            ax.scatter(xs, m['values'], color=colours(i % 10), zorder=3)
            ax.errorbar([i], [m['mean']],
                        yerr=[m['std']],
                        fmt='_',
                        color='black',
                        markersize=18,
                        capsize=4,
                        zorder=2)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha='right')
        ax.set_ylabel(key)
        ax.set_title(f'{key}: one point per seed, mean +- std')
        ax.grid(axis='y', alpha=0.3)
    down, up = axes[-2], axes[-1]
    for i, name in enumerate(names):
        last = summary[name]['stages'][-1]
        runs = [r for k, r in results.items() if k[0] == last]
        for j, result in enumerate(runs):
            curve = loss_curve(scalars(result['work_dir']))
            if curve:
                down.plot(
                    *zip(*curve),
                    color=colours(i % 10),
                    alpha=0.8,
                    lw=1,
                    label=name if j == 0 else None)
    down.set_title('training loss, downstream (last) stage')
    down.set_xlabel('iteration')
    down.set_ylabel('loss')
    down.legend(fontsize=8)
    firsts = {s for n in names for s in summary[n]['stages'][:-1]}
    for i, stage in enumerate(sorted(firsts)):
        runs = [r for k, r in results.items() if k[0] == stage]
        for j, result in enumerate(runs):
            curve = loss_curve(scalars(result['work_dir']))
            if curve:
                up.plot(
                    *zip(*curve),
                    color=colours((i + 3) % 10),
                    lw=1,
                    alpha=0.8,
                    label=stage if j == 0 else None)
    up.set_title('training loss, upstream stages')
    up.set_xlabel('iteration')
    if firsts:
        up.legend(fontsize=8)
    fig.suptitle(title or osp.basename(spec.path))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def make_data(spec, data_root):
    if not spec.data:
        return
    path = osp.join(REPO_ROOT, 'tools', 'misc', 'make_toy_data.py')
    module_spec = importlib.util.spec_from_file_location('make_toy_data', path)
    tool = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(tool)
    for item in spec.data:
        item = dict(item)
        make = getattr(tool, f'make_toy_{item.pop("dataset")}')
        make(data_root, **item)


def cpu_model():
    try:
        out = subprocess.run(['lscpu'], capture_output=True, text=True).stdout
        return next(
            (line.split(':', 1)[1].strip()
             for line in out.splitlines() if line.startswith('Model name')),
            '')
    except OSError:
        return ''


def main(argv=None):
    args = parse_args(argv)
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated')
    start = time.time()
    spec = PipelineSpec(args.spec, args.cfg_options)
    pipelines = args.pipelines or list(spec.pipelines)
    for name in pipelines:
        spec.chain(name)  # unknown names fail before anything runs
    metric_keys = spec.metrics
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [REPO_ROOT] +
        [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])
    if args.threads:
        for var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS'):
            env[var] = str(args.threads)
    os.makedirs(args.work_dir, exist_ok=True)
    if not args.report_only:
        make_data(spec, args.data_root)
    stages = {s for p in pipelines for s in spec.chain(p)}
    shared = sum(spec.stages[s]['shared'] for s in stages)
    print(f'{len(pipelines)} pipelines x {len(args.seeds)} seeds from '
          f'{spec.path}: {shared + (len(stages) - shared) * len(args.seeds)} '
          f'runs ({shared} shared by every seed); logs under '
          f'{args.work_dir}/<stage>/<seed>/console.log')
    results = {}
    for seed in args.seeds:
        for name in pipelines:
            for stage in spec.chain(name):
                if args.report_only:
                    collect_stage(spec, stage, seed, args, results)
                else:
                    run_stage(spec, stage, seed, args, env, results)
    summary = summarise(spec, pipelines, args.seeds, results, metric_keys)
    wall = time.time() - start
    print_table(summary, metric_keys)
    png = osp.join(args.work_dir, 'comparison.png')
    plot(summary, spec, results, metric_keys, png, args.title)
    out = dict(
        spec=spec.path,
        pipelines=summary,
        seeds=args.seeds,
        metrics=metric_keys,
        command=' '.join(sys.argv),
        cpu=cpu_model(),
        threads=args.threads,
        wall_time_s=wall,
        runs=[r for r in results.values()])
    json_path = osp.join(args.work_dir, 'comparison.json')
    with open(json_path, 'w') as f:
        json.dump(out, f, indent=2)
    print(f'\nwall time {wall / 60:.1f} min; {json_path}, {png}')
    return out


if __name__ == '__main__':
    main()
