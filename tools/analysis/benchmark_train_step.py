"""Time whole training steps of a full-size RMoE model against its dense twin.

Builds full-size Swin-T UperNet (ADE20K, 150 classes) and Swin-T Mask R-CNN
(COCO, 80 classes) from the project's configs with no checkpoint (weights
drawn as from scratch; speed does not depend on them) and times one training
step, ``model.train_step(batch, optim_wrapper)`` as the runner calls it
(data preprocessing, forward, losses, backward, AdamW step with the config's
parameter-wise settings), on one fixed synthetic batch, for three variants:

- ``dense``: the dense model (``moe_blocks='none'``), everything trains;
- ``rmoe``: the RMoE model (8 experts, top-1, full residuals), everything
  trains (RMoE-D, the finetune stage of RMoE-I);
- ``rmoe_frozen``: the RMoE model with the backbone core frozen as
  ``RMoEStageHook(frozen=['core'])`` freezes it (RMoE-I's intermediate
  stage: residuals, routers and heads train).

Steps are interleaved (dense, rmoe, rmoe_frozen, dense, ...) and the script
prints median times and ratios to dense, split into forward (with
preprocessing and losses), backward and optimizer step, plus the share of
the dense step spent outside the backbone: the backbone's own forward +
backward (on the same images, with a fixed gradient on its outputs) is timed
in the same rounds, and ``1 - backbone / step`` is the head's share
(neck, heads, losses, optimizer). ``--memory`` runs each variant in a fresh
process and reports its peak resident memory (model, optimizer state and the
step).

Example::

    python tools/analysis/benchmark_train_step.py --tasks upernet \\
        --size 512 512 --batch 2 --threads 1 --repeats 5 --memory

NOTE: with one thread the process CPU time is printed next to the wall
clock; it does not count time spent waiting for a core that other processes
hold, so it is the steadier figure on a shared machine.
"""
import argparse
import json
import os
import os.path as osp
import re
import statistics
import subprocess
import sys
import time

import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData, PixelData

import rmoe_mm  # noqa: F401  registers the RMoE modules
from rmoe_mm.moe import split_parameters

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TASKS = {
    # task: (dense config, RMoE config)
    'upernet': ('configs/pipelines/swin_t_upernet_ade20k_dense.py',
                'configs/rmoe_swin_t_upernet_ade20k.py'),
    'mask_rcnn': ('configs/pipelines/swin_t_mask_rcnn_coco_dense.py',
                  'configs/rmoe_swin_t_mask_rcnn_coco.py'),
}
VARIANTS = ('dense', 'rmoe', 'rmoe_frozen')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--tasks', nargs='+', default=list(TASKS), choices=list(TASKS))
    parser.add_argument(
        '--size',
        nargs=2,
        type=int,
        default=[512, 512],
        metavar=('H', 'W'),
        help='input size (default 512)')
    parser.add_argument(
        '--batch',
        type=int,
        default=2,
        help='images per step (UperNet needs >= 2 for the '
        'batch norm on its 1x1 pooled maps)')
    parser.add_argument(
        '--repeats',
        type=int,
        default=5,
        help='timed steps per variant (interleaved)')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument(
        '--device',
        default='cpu',
        help="'cpu' or 'cuda' (timed between "
        'synchronisations; memory: CUDA peak allocated)')
    parser.add_argument(
        '--memory',
        action='store_true',
        help='also measure peak memory, fresh process each')
    parser.add_argument('--json', help='write the results to this file')
    parser.add_argument(
        '--child-memory',
        nargs=2,
        metavar=('TASK', 'VARIANT'),
        help=argparse.SUPPRESS)
    return parser.parse_args()


def load_cfg(task, variant):
    cfg = Config.fromfile(osp.join(ROOT, TASKS[task][variant != 'dense']))
    cfg.model.backbone.init_cfg = None  # no checkpoint: built from scratch
    return cfg


def build_trainer(task, variant, size, device='cpu'):
    """Model and optimizer wrapper, built as the runner builds them
    (optimizer first, then the freezing, as RMoEStageHook does)."""
    cfg = load_cfg(task, variant)
    init_default_scope(cfg.default_scope)
    if cfg.default_scope == 'mmseg':
        from mmseg.registry import MODELS
        cfg.model.data_preprocessor.size = tuple(size)
    else:
        from mmdet.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.to(device)
    model.train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    if variant == 'rmoe_frozen':
        for _, param in split_parameters(model)['core']:
            param.requires_grad_(False)
    return model, optim_wrapper


def make_batch(task, size, batch, seed=0):
    """A fixed synthetic batch in the layout the dataloader produces."""
    generator = torch.Generator().manual_seed(seed)
    height, width = size
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(
            torch.randint(
                0,
                256, (3, height, width),
                dtype=torch.uint8,
                generator=generator))
        meta = dict(
            img_shape=(height, width),
            ori_shape=(height, width),
            pad_shape=(height, width),
            scale_factor=(1., 1.),
            flip=False,
            flip_direction=None)
        if task == 'upernet':
            from mmseg.structures import SegDataSample
            sample = SegDataSample(metainfo=meta)
            sample.gt_sem_seg = PixelData(
                data=torch.randint(
                    0, 150, (1, height, width), generator=generator))
        else:
            from mmdet.structures import DetDataSample
            from mmdet.structures.mask import BitmapMasks
            sample = DetDataSample(metainfo=meta)
            num = 8
            xy = torch.rand(
                num, 2, generator=generator) * torch.tensor(
                    [width * 0.6, height * 0.6])
            wh = torch.rand(
                num, 2, generator=generator) * torch.tensor(
                    [width * 0.35, height * 0.35]) + 16
            boxes = torch.cat([xy, xy + wh], 1)
            masks = torch.zeros(num, height, width, dtype=torch.uint8)
            for i, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
                masks[i, y0:y1, x0:x1] = 1
            instances = InstanceData()
            instances.bboxes = boxes
            instances.labels = torch.randint(
                0, 80, (num, ), generator=generator)
            instances.masks = BitmapMasks(masks.numpy(), height, width)
            sample.gt_instances = instances
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def timed_train_step(model, optim_wrapper, batch):
    """``model.train_step`` split into (forward, backward, optimizer) seconds,
    wall clock and CPU time; same calls as mmengine's ``BaseModel``."""
    device = next(model.parameters()).device
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    sync()
    wall, cpu = [time.perf_counter()], [time.process_time()]

    def mark():
        sync()
        wall.append(time.perf_counter())
        cpu.append(time.process_time())

    with optim_wrapper.optim_context(model):
        data = model.data_preprocessor(batch, True)
        losses = model._run_forward(data, mode='loss')
    parsed, _ = model.parse_losses(losses)
    mark()
    optim_wrapper.backward(parsed)
    mark()
    optim_wrapper.step()
    optim_wrapper.zero_grad()
    mark()
    return ([b - a for a, b in zip(wall, wall[1:])],
            [b - a for a, b in zip(cpu, cpu[1:])])


def backbone_step(model, batch, grads):
    """Forward + backward of the backbone alone, on the step's images."""
    with torch.no_grad():
        images = model.data_preprocessor(batch, True)['inputs']
    sync = torch.cuda.synchronize if images.is_cuda else (lambda: None)
    sync()
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    outs = model.backbone(images)
    if grads[0] is None:
        grads[:] = [torch.randn_like(o) for o in outs]
    torch.autograd.backward(list(outs), grads)
    sync()
    elapsed = (time.perf_counter() - start_wall,
               time.process_time() - start_cpu)
    for param in model.backbone.parameters():
        param.grad = None
    return elapsed


def benchmark_task(task, args):
    batch = make_batch(task, args.size, args.batch)
    trainers = {
        v: build_trainer(task, v, args.size, args.device)
        for v in VARIANTS
    }
    parts = ('forward', 'backward', 'optimizer')
    wall = {v: {p: [] for p in parts + ('step', )} for v in VARIANTS}
    cpu = {v: {p: [] for p in parts + ('step', )} for v in VARIANTS}
    backbone = {v: dict(wall=[], cpu=[]) for v in ('dense', 'rmoe')}
    grads = {v: [None] for v in backbone}
    total = args.warmup + args.repeats
    for round_ in range(total):
        for variant, (model, optim_wrapper) in trainers.items():
            step_wall, step_cpu = timed_train_step(model, optim_wrapper, batch)
            if round_ < args.warmup:
                continue
            for part, w, c in zip(parts, step_wall, step_cpu):
                wall[variant][part].append(w)
                cpu[variant][part].append(c)
            wall[variant]['step'].append(sum(step_wall))
            cpu[variant]['step'].append(sum(step_cpu))
        for variant in backbone:
            w, c = backbone_step(trainers[variant][0], batch, grads[variant])
            if round_ >= args.warmup:
                backbone[variant]['wall'].append(w)
                backbone[variant]['cpu'].append(c)
        print(
            f'  [{task}] round {round_ + 1}/{total}: step ' +
            ', '.join(f'{v} {wall[v]["step"][-1]:.2f} s'
                      for v in VARIANTS if wall[v]['step']),
            flush=True)
    med = statistics.median
    result = {}
    for variant in VARIANTS:
        result[variant] = {
            f'{part}_{clock}': med(times[variant][part])
            for part in parts + ('step', )
            for clock, times in (('wall', wall), ('cpu', cpu))
        }
    for variant in backbone:
        for clock in ('wall', 'cpu'):
            share = med(
                backbone[variant][clock]) / result[variant][f'step_{clock}']
            result[variant][f'backbone_share_{clock}'] = share
    params = {
        v: sum(p.numel() for p in trainers[v][0].parameters()
               if p.requires_grad)
        for v in VARIANTS
    }
    return result, params


def print_task(task, result, params, args):
    height, width = args.size
    print(f'\n{task}: Swin-T, {args.batch} x {height}x{width}, '
          f'{args.threads} thread(s), AdamW, median of {args.repeats} '
          'interleaved steps')
    clocks = ('wall', 'cpu') if args.threads == 1 and args.device == 'cpu' \
        else ('wall', )
    for clock in clocks:
        base = result['dense'][f'step_{clock}']
        print(f'  {clock} clock   {"step s":>8s} {"x dense":>8s} '
              f'{"fwd s":>7s} {"bwd s":>7s} {"optim s":>8s} '
              f'{"trainable":>10s}')
        for variant in VARIANTS:
            row = result[variant]
            print(f'  {variant:<12s} {row[f"step_{clock}"]:8.2f} '
                  f'{row[f"step_{clock}"] / base:8.3f} '
                  f'{row[f"forward_{clock}"]:7.2f} '
                  f'{row[f"backward_{clock}"]:7.2f} '
                  f'{row[f"optimizer_{clock}"]:8.2f} '
                  f'{params[variant] / 1e6:9.1f}M')
        for variant in ('dense', 'rmoe'):
            share = result[variant][f'backbone_share_{clock}']
            print(f'  {variant}: backbone forward + backward '
                  f'{share:.1%} of the step, the rest (neck, heads, '
                  f'losses, optimizer) {1 - share:.1%}')


def _status_kb(field):
    with open('/proc/self/status') as status:
        return int(re.search(rf'{field}:\s+(\d+)', status.read()).group(1))


def child_memory(task, variant, args):
    torch.set_num_threads(args.threads)
    batch = make_batch(task, args.size, args.batch)
    cuda = args.device != 'cpu'
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 1024
    else:
        with open('/proc/self/clear_refs', 'w') as refs:
            refs.write('5')  # reset the peak (VmHWM) to the current RSS
        before = _status_kb('VmRSS')
    model, optim_wrapper = build_trainer(task, variant, args.size, args.device)
    for _ in range(2):
        timed_train_step(model, optim_wrapper, batch)
    peak = torch.cuda.max_memory_allocated() / 1024 if cuda else \
        _status_kb('VmHWM')
    print(json.dumps(dict(peak_mb=(peak - before) / 1024)))


def measure_memory(task, args):
    peaks = {}
    for variant in VARIANTS:
        cmd = [
            sys.executable,
            osp.abspath(__file__), '--child-memory', task, variant, '--size',
            *map(str, args.size), '--batch',
            str(args.batch), '--threads',
            str(args.threads), '--device', args.device
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f'{" ".join(cmd)} failed:\n{proc.stderr}')
        peaks[variant] = json.loads(
            proc.stdout.strip().splitlines()[-1])['peak_mb']
    print('  peak memory (model + AdamW state + 2 steps, fresh process): ' +
          ', '.join(f'{v} {peaks[v]:.0f} MB ({peaks[v] / peaks["dense"]:.2f}'
                    ' x dense)' for v in VARIANTS))
    return peaks


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    # mmengine logs every parameter-wise optimizer setting at INFO.
    from mmengine.logging import MMLogger
    MMLogger.get_instance('mmengine').setLevel('WARNING')
    if args.child_memory:
        child_memory(*args.child_memory, args)
        return
    print(f'torch {torch.__version__}, {args.threads} thread(s); load '
          'average {:.2f} {:.2f} {:.2f}'.format(*os.getloadavg()))
    results = {}
    for task in args.tasks:
        result, params = benchmark_task(task, args)
        print_task(task, result, params, args)
        results[task] = dict(times=result, trainable_params=params)
        if args.memory:
            results[task]['peak_mb'] = measure_memory(task, args)
        print(
            '  load average now {:.2f} {:.2f} {:.2f}'.format(*os.getloadavg()))
    if args.json:
        with open(args.json, 'w') as out:
            json.dump(results, out, indent=1)


if __name__ == '__main__':
    main()
