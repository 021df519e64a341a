"""The memory table of docs/scaling.md: RMoE Swin-T/S/B/L x {UperNet ADE20K,
Mask R-CNN COCO} x {8, 32 experts} x strategies, per GPU of an 8-GPU node.

    python tools/analysis/memory_table.py [--gpus 8] [--out RESULTS.json]
        [--only I [I ...]]

Every number comes from tools/analysis/memory_estimate.py (see its docstring
for what is counted and how activations are measured); activations are
measured on a model with 2 experts (they do not depend on the count) and
both in fp32 and under autocast (``--amp``). Swin-B Mask R-CNN has no config
of its own: it is the Swin-S one with Swin-B widths. Prints the Markdown
tables; a model *fits* a GPU when its larger stage needs at most 80% of the
GPU's memory (the rest: CUDA context, library workspaces, allocator
fragmentation, and the 7-16% by which the estimate fell short of mmseg's
and mmdet's logged peaks of dense Swin-T, docs/scaling.md).
"""
import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from mmengine.logging import MMLogger

sys.path.insert(0, str(Path(__file__).resolve().parent))
import memory_estimate as me  # noqa: E402

SWIN_B_DET = {
    'model.backbone.embed_dims': 128,
    'model.backbone.num_heads': [4, 8, 16, 32],
    'model.neck.in_channels': [128, 256, 512, 1024],
}
MODELS = [
    ('Swin-T', 'UperNet', 'configs/rmoe_swin_t_upernet_ade20k.py', {}),
    ('Swin-S', 'UperNet', 'configs/rmoe_swin_s_upernet_ade20k.py', {}),
    ('Swin-B', 'UperNet', 'configs/rmoe_swin_b_upernet_ade20k.py', {}),
    ('Swin-L', 'UperNet', 'configs/rmoe_swin_l_upernet_ade20k.py', {}),
    ('Swin-T', 'Mask R-CNN', 'configs/rmoe_swin_t_mask_rcnn_coco.py', {}),
    ('Swin-S', 'Mask R-CNN', 'configs/rmoe_swin_s_mask_rcnn_coco.py', {}),
    ('Swin-B', 'Mask R-CNN', 'configs/rmoe_swin_s_mask_rcnn_coco.py',
     SWIN_B_DET),
    ('Swin-L', 'Mask R-CNN', 'configs/rmoe_swin_l_mask_rcnn_coco.py', {}),
]
EXPERTS = (8, 32)
GPU_GIB = (32, 40, 80)
HEADROOM = 0.8


def estimate_model(index: int, gpus: int) -> list:
    """Every estimate of ``MODELS[index]`` (both expert counts, fp32 and
    AMP activations)."""
    size, head, config, options = MODELS[index]
    small = me.load_cfg(config, options)
    small.model.backbone.moe_cfg.num_experts = 2
    torch.manual_seed(0)
    activation_model, fits, results = me.build_model(small), {}, []
    for experts in EXPERTS:
        for amp in (False, True):
            cfg = me.load_cfg(config, options)
            cfg.model.backbone.moe_cfg.num_experts = experts
            result = me.estimate(
                cfg,
                gpus=gpus,
                amp=amp,
                activation_model=activation_model,
                fit_cache=fits)
            result.update(
                model=size, head=head, experts=experts, config=config)
            results.append(result)
    return results


def estimate_all(gpus: int, indices, results: list, out_path=None) -> list:
    """``results`` plus the estimates of ``MODELS[i]`` for ``i`` in
    ``indices``, each model in its own process, so that each starts with
    the memory the previous one freed (glibc keeps freed heap otherwise);
    written to ``out`` after each model."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536')
    for index in indices:
        size, head, _, _ = MODELS[index]
        results = [
            r for r in results if (r['model'], r['head']) != (size, head)
        ]
        start = time.time()
        with tempfile.NamedTemporaryFile(suffix='.json') as out:
            subprocess.run([
                sys.executable, __file__, '--gpus',
                str(gpus), '--model',
                str(index), '--out', out.name
            ],
                           check=True,
                           env=env)
            results += json.loads(Path(out.name).read_text())
        if out_path:
            Path(out_path).write_text(json.dumps(results, indent=1))
        print(
            f'[{index + 1}/{len(MODELS)}] {size} {head}: '
            f'{time.time() - start:.0f} s',
            file=sys.stderr)
    return results


def worst(result, strategy) -> float:
    """GiB of the larger stage."""
    return max(r['total']
               for r in result['rows'] if r['strategy'] == strategy) / me.GiB


def tables(results: list) -> str:
    gpus = results[0]['gpus']
    lines = [
        f'GiB per GPU on {gpus} GPUs (expert-parallel group = {gpus} '
        'GPUs), batch 2 per GPU, fp32 weights, AdamW; '
        'intermediate (core frozen) / finetune stage; activations fp32, '
        '[AMP] in brackets.',
        '',
        '| model | head | E | params (M) | stage | ddp | zero | ep |',
        '|---|---|---|---|---|---|---|---|',
    ]
    by_key = {
        (r['model'], r['head'], r['experts'], r['amp']): r
        for r in results
    }
    measured = {(r['model'], r['head']) for r in results}
    for size, head, _, _ in MODELS:
        if (size, head) not in measured:
            lines.append(f'| {size} | {head} | - | - | - | not measured '
                         '| | |')
            continue
        for experts in EXPERTS:
            fp32 = by_key[(size, head, experts, False)]
            amp = by_key[(size, head, experts, True)]
            params = sum(fp32['params'].values()) / 1e6
            stages = list(dict.fromkeys(r['stage'] for r in fp32['rows']))
            for stage in stages:
                cells = []
                for strategy in me.STRATEGIES:
                    a, b = [
                        next(r['total']
                             for r in res['rows'] if r['stage'] == stage
                             and r['strategy'] == strategy) / me.GiB
                        for res in (fp32, amp)
                    ]
                    cells.append(f'{a:.1f} [{b:.1f}]')
                short = stage.split(' ')[0]
                lines.append(f'| {size} | {head} | {experts} | {params:.0f} '
                             f'| {short} | ' + ' | '.join(cells) + ' |')
    lines += [
        '',
        f'Largest model that fits (larger stage <= {HEADROOM:.0%} of the '
        'GPU), fp32 [AMP]:',
        '',
        '| GPU | head | ' + ' | '.join(me.STRATEGIES) + ' |',
        '|---|---|' + '---|' * len(me.STRATEGIES),
    ]
    order = [(s, e) for s in ('Swin-T', 'Swin-S', 'Swin-B', 'Swin-L')
             for e in EXPERTS]
    for gib in GPU_GIB:
        for head in ('UperNet', 'Mask R-CNN'):
            known = [(s, e) for s, e in order if (s, head) in measured]
            # A larger model that was not measured may fit too.
            unknown = sorted({
                s
                for s, _ in order
                if (s, head) not in measured and known and order.index((
                    s, EXPERTS[0])) > order.index(known[-1])
            })
            cells = []
            for strategy in me.STRATEGIES:
                best = []
                for amp in (False, True):
                    fitting = [
                        (s, e) for s, e in known
                        if worst(by_key[(s, head, e,
                                         amp)], strategy) <= HEADROOM * gib
                    ]
                    text = f'{fitting[-1][0]} E={fitting[-1][1]}' \
                        if fitting else 'none'
                    if fitting and fitting[-1] == known[-1] and unknown:
                        text += '+'
                    best.append(text)
                cells.append(f'{best[0]} [{best[1]}]')
            lines.append(f'| {gib} GB | {head} | ' + ' | '.join(cells) + ' |')
    missing = [f'{s} {h}' for s, h, _, _ in MODELS if (s, h) not in measured]
    if missing:
        lines += [
            '', '+: the largest measured model fits; not measured: ' +
            ', '.join(missing) + '.'
        ]
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--gpus', type=int, default=8)
    parser.add_argument(
        '--out',
        help='JSON of every estimate: read first (when it exists) and '
        'written back with the new ones, so a run can be split')
    parser.add_argument(
        '--only',
        type=int,
        nargs='+',
        help='estimate only these rows of MODELS (0-7); with --out, '
        'the others come from the file')
    parser.add_argument(
        '--model', type=int, help='only MODELS[i] to --out (internal)')
    args = parser.parse_args()
    MMLogger.get_instance('mmengine').setLevel(logging.WARNING)
    if args.model is not None:
        Path(args.out).write_text(
            json.dumps(estimate_model(args.model, args.gpus)))
        return
    results = []
    if args.out and Path(args.out).exists():
        results = json.loads(Path(args.out).read_text())
    indices = args.only if args.only is not None else range(len(MODELS))
    results = estimate_all(args.gpus, indices, results, args.out)
    if results:
        print(tables(results))


if __name__ == '__main__':
    main()
