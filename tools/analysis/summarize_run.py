"""Print where a training run left its checkpoint, log and metrics.

    python tools/analysis/summarize_run.py WORK_DIR [--seconds S] [--json OUT]

Reads mmengine's layout: ``WORK_DIR/last_checkpoint``, the newest
``WORK_DIR/<timestamp>/<timestamp>.log`` and the metrics that ``tools/test.py
--work-dir WORK_DIR/test`` wrote to ``WORK_DIR/test/<timestamp>/<timestamp>.json``.
"""
import argparse
import glob
import json
import os.path as osp


def newest(pattern):
    paths = sorted(glob.glob(pattern))
    return paths[-1] if paths else None


def read_test_metrics(work_dir):
    """The metrics line of the newest test run under ``work_dir/test``."""
    path = newest(osp.join(work_dir, 'test', '*', '*.json'))
    if path is None:
        return None, {}
    with open(path) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    return path, (lines[-1] if lines else {})


def summarize(work_dir):
    ckpt_file = osp.join(work_dir, 'last_checkpoint')
    checkpoint = open(ckpt_file).read().strip() if osp.exists(ckpt_file) else None
    train_log = newest(osp.join(work_dir, '2*', '2*.log'))
    metrics_file, metrics = read_test_metrics(work_dir)
    return dict(work_dir=work_dir, checkpoint=checkpoint, train_log=train_log,
                metrics_file=metrics_file,
                metrics={k: v for k, v in metrics.items()
                         if k not in ('data_time', 'time', 'step')})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('work_dir')
    parser.add_argument('--seconds', type=float, help='wall time of the run')
    parser.add_argument('--json', help='also write the summary here')
    args = parser.parse_args()
    summary = summarize(args.work_dir)
    if args.seconds is not None:
        summary['seconds'] = args.seconds
    print(f"checkpoint : {summary['checkpoint']}")
    print(f"train log  : {summary['train_log']}")
    print(f"metrics    : {summary['metrics_file']}")
    for key, value in summary['metrics'].items():
        print(f'{key:<11}: {value}')
    if args.seconds is not None:
        print(f'wall time  : {args.seconds:.0f} s (train + test)')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(summary, f, indent=2)


if __name__ == '__main__':
    main()
