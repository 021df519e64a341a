"""Print where training runs left their checkpoint, log and metrics, side by side.

    python tools/analysis/summarize_run.py WORK_DIR [WORK_DIR ...] [--json OUT]

Reads mmengine's layout: ``WORK_DIR/last_checkpoint``, the newest
``WORK_DIR/<timestamp>/<timestamp>.log``, the metrics that ``tools/test.py
--work-dir WORK_DIR/test`` wrote to ``WORK_DIR/test/<timestamp>/<timestamp>.json``
and, when present, the wall time in ``WORK_DIR/seconds``.
"""
import argparse
import glob
import json
import os.path as osp

NOT_METRICS = ('data_time', 'time', 'step')


def newest(pattern):
    paths = sorted(glob.glob(pattern))
    return paths[-1] if paths else None


def read_file(path):
    return open(path).read().strip() if osp.exists(path) else None


def summarize(work_dir):
    """Paths and test metrics of one run."""
    metrics_file = newest(osp.join(work_dir, 'test', '*', '*.json'))
    metrics = {}
    if metrics_file:
        with open(metrics_file) as f:
            lines = [json.loads(line) for line in f if line.strip()]
        metrics = {k: v for k, v in (lines[-1] if lines else {}).items()
                   if k not in NOT_METRICS}
    seconds = read_file(osp.join(work_dir, 'seconds'))
    return dict(name=osp.basename(osp.normpath(work_dir)), work_dir=work_dir,
                checkpoint=read_file(osp.join(work_dir, 'last_checkpoint')),
                train_log=newest(osp.join(work_dir, '2*', '2*.log')),
                metrics_file=metrics_file, metrics=metrics,
                seconds=float(seconds) if seconds else None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('work_dirs', nargs='+')
    parser.add_argument('--json', help='also write the summaries here')
    args = parser.parse_args()
    runs = [summarize(w) for w in args.work_dirs]
    for run in runs:
        print(f"== {run['name']}")
        print(f"   checkpoint: {run['checkpoint']}")
        print(f"   train log : {run['train_log']}")
        print(f"   metrics   : {run['metrics_file']}")
    keys = sorted({k for run in runs for k in run['metrics']})
    width = max(len(run['name']) for run in runs)
    print('\n' + f"{'run':<{width}}  " + '  '.join(f'{k:>8}' for k in keys) +
          '  wall time (train + test)')
    for run in runs:
        values = '  '.join(f"{run['metrics'].get(k, float('nan')):>8.2f}" for k in keys)
        seconds = f"{run['seconds']:.0f} s" if run['seconds'] is not None else '-'
        print(f"{run['name']:<{width}}  {values}  {seconds}")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(runs, f, indent=2)


if __name__ == '__main__':
    main()
