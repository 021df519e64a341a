"""Per-GPU training memory of an mmseg / mmdet config, per pipeline stage and
parallel strategy.

    python tools/analysis/memory_estimate.py CONFIG [--gpus N]
        [--strategy {ddp,zero,ep,all}] [--ep-size G] [--batch B]
        [--input H W] [--amp] [--cfg-options k=v ...] [--json OUT]

What is counted (bytes per GPU, fp32 weights as mmengine keeps them, also
under AMP):

- ``params``: parameters and buffers. ``ep``: the residuals of ``E / G``
  experts per layer (``G`` = ``--ep-size``, default ``--gpus``).
- ``grads``: the gradients of what trains in the stage; ``ddp_buckets``:
  DDP's flat copy of the gradients it reduces (mmengine's wrapper keeps
  ``gradient_as_bucket_view=False``), none on one GPU and none for expert
  shards, which DDP does not reduce.
- ``optimizer``: the states of the config's optimizer (AdamW / Adam: 2 per
  parameter, 3 with ``amsgrad``; SGD: 1 with momentum, else 0; ...) for
  every parameter that has trained by the end of the stage (optimizers keep
  state once created). ``zero``: divided over the ``N`` GPUs (torch's ZeRO
  assigns whole parameters, so the largest rank holds a little more).
  ``ep``: the shards' states divided by ``G``.
- ``activations``: what autograd keeps for the backward pass, plus the
  first step of the backward pass. Measured here, on the CPU: one training
  forward of the real model (the stage's frozen parameters frozen) at three
  small input sizes, counting the bytes of every storage saved for backward
  (``torch.autograd.graph.saved_tensors_hooks``; parameters excluded, each
  storage once) plus twice the largest such storage (the backward pass
  allocates the gradients of that tensor and of its input while everything
  saved is still alive; for UperNet that is the full-resolution logits);
  then the least-squares line ``a + b * pixels`` through the points (never
  below the largest one), evaluated at the training input size and
  multiplied by the batch per GPU. ``--amp`` measures under
  bf16 autocast (2-byte activations, as fp16 on a GPU). Expert parallelism
  moves rows between ranks but keeps their number on average, so the
  activations do not depend on the strategy.

- ``step_temporaries``: the optimizer step's scratch, one buffer the size
  of the parameters the rank updates (torch's multi-tensor AdamW takes the
  square root of all second moments at once; SGD with weight decay adds it
  to a copy of the gradients).

``total`` = params + DDP buckets + optimizer + gradients + the larger of
activations and step temporaries: the backward pass peaks with (nearly) all
activations alive, the optimizer step with all gradients and its scratch.
Counting every gradient in the backward peak too makes it an upper bound on
the allocated peak (on the toy config 2-6% above the measured peak here,
docs/scaling.md; tests/tools/test_memory_estimate.py allows 0-30%); the
CUDA context and the allocator's
cache come on top (docs/scaling.md). ``--measure`` also runs one real
training step of the stage on this machine's device at the given input and
prints the measured peak beside the estimate.
Weights are never loaded; the parameter count comes from a model built on
the ``meta`` device.
"""
import argparse
import contextlib
import json
import math
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config, DictAction
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import MODELS, init_default_scope
from torch import nn

import rmoe_mm  # noqa: F401  registers the RMoE modules
from rmoe_mm.moe import ROLES, split_parameters

GiB = 2**30
#: Objects per synthetic detection image: the mask head runs on every
#: positive RoI, so a busy image (COCO has up to ~90) costs most.
INSTANCES = 32
STRATEGIES = ('ddp', 'zero', 'ep')
#: Optimizer -> fp32 states per parameter (``None``: depends on settings).
OPTIMIZER_STATES = {
    'AdamW': None,
    'Adam': None,
    'SGD': None,
    'Adamax': 2,
    'NAdam': 2,
    'RAdam': 2,
    'Adadelta': 2,
    'Adagrad': 1,
    'RMSprop': None,
    'Lion': 1,
}


# ------------------------------------------------------------------ config
def load_cfg(config: str, options: Optional[dict] = None) -> Config:
    cfg = Config.fromfile(config)
    if options:
        cfg.merge_from_dict(options)
    return cfg


def build_model(cfg: Config, meta: bool = False):
    """The config's model (no weights loaded, SyncBN as BN), in train mode;
    ``meta``: every parameter on the meta device (shapes only, no
    memory)."""
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    if not meta:  # SyncBN needs a process group; BN saves the same
        return revert_sync_batchnorm(MODELS.build(cfg.model)).train()
    with parameters_on_meta():
        return MODELS.build(cfg.model).train()


@contextlib.contextmanager
def parameters_on_meta():
    """Inside, every parameter moves to the meta device when a module
    registers it (``torch.device('meta')`` alone breaks constructors that
    read values, e.g. mmseg Swin's ``.item()`` of drop-path rates)."""
    register = nn.Module.register_parameter

    def register_on_meta(module, name, param):
        if param is not None and param.device.type != 'meta':
            param = nn.Parameter(
                param.detach().to('meta'), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def optimizer_states(cfg: Config) -> Tuple[str, int, bool]:
    """``(name, states per parameter, is ZeRO)`` of the config's optimizer."""
    optimizer = dict(cfg.optim_wrapper.optimizer)
    name = optimizer.pop('type')
    zero = name.endswith('ZeroRedundancyOptimizer')
    if zero:
        name = optimizer.pop('optimizer_type')
    name = name.split('.')[-1]
    if name not in OPTIMIZER_STATES:
        raise ValueError(f'unknown optimizer {name!r}: its state size is not '
                         f'known; known: {sorted(OPTIMIZER_STATES)}')
    states = OPTIMIZER_STATES[name]
    if name in ('Adam', 'AdamW'):
        states = 3 if optimizer.get('amsgrad', False) else 2
    elif name == 'SGD':
        states = 1 if optimizer.get('momentum', 0) else 0
    elif name == 'RMSprop':
        states = 1 + bool(optimizer.get('momentum', 0)) + bool(
            optimizer.get('centered', False))
    return name, states, zero


def pipeline_stages(cfg: Config) -> Tuple[List[Tuple[str, frozenset]], bool]:
    """``[(name, frozen roles)]`` of the config's ``RMoEStageHook``, and
    whether they come from the config (else RMoE-I's two stages)."""
    for hook in cfg.get('custom_hooks') or []:
        if str(hook.get('type', '')).endswith('RMoEStageHook'):
            return [(s['name'], frozenset(s.get('frozen', ())))
                    for s in hook['stages']], True
    return [('intermediate (core frozen)', frozenset({'core'})),
            ('finetune', frozenset())], False


def training_input(cfg: Config) -> Tuple[int, int]:
    """``(H, W)`` a training image has after the pipeline: mmseg's
    ``crop_size``, or the largest resize scale anywhere in the train
    pipeline (mmdet: (1333, 800) -> 800 x 1333, also inside
    ``RandomChoice``), padded to a multiple of 32."""
    if cfg.get('crop_size'):
        height, width = cfg.crop_size
        return int(height), int(width)
    pipeline = cfg.train_dataloader.dataset.get('pipeline') or \
        cfg.get('train_pipeline') or []
    scales = []

    def collect(node):  # RandomChoice nests its transforms in lists
        if isinstance(node, (list, tuple)):
            for item in node:
                collect(item)
        elif isinstance(node, dict):
            for key in ('scale', 'scales'):
                value = node.get(key)
                if value is not None:
                    nested = isinstance(value[0], (list, tuple))
                    scales.extend(value if nested else [value])
            collect(node.get('transforms', []))

    collect(pipeline)
    if not scales:
        raise ValueError('cannot tell the training input size from the '
                         'config; pass --input H W')
    long_side, short_side = max(max(s)
                                for s in scales), max(min(s) for s in scales)
    return (32 * math.ceil(short_side / 32), 32 * math.ceil(long_side / 32))


# ----------------------------------------------------------- parameters
def parameter_counts(model) -> Dict[str, int]:
    """Elements of each role (``split_parameters``) and of the buffers, in
    bytes (``*_bytes``) and counts; ``frozen_at_build``: parameters that do
    not require grad when the model is built (e.g. Swin's
    ``frozen_stages``)."""
    roles = split_parameters(model)
    counts = {role: sum(p.numel() for _, p in roles[role]) for role in ROLES}
    counts['frozen_at_build'] = {
        role: sum(p.numel() for _, p in roles[role] if not p.requires_grad)
        for role in ROLES
    }
    counts['buffer_bytes'] = sum(b.numel() * b.element_size()
                                 for b in model.buffers())
    counts['residual_layers'] = sum(1 for _, m in model.named_modules()
                                    if hasattr(m, 'expert_parallel'))
    return counts


def account(counts: Dict, stages: Sequence[Tuple[str, frozenset]],
            stage_index: int, strategy: str, gpus: int, ep_size: int,
            states: int, zero: bool) -> Dict[str, float]:
    """Bytes per GPU of params, grads, DDP buckets, optimizer state and the
    optimizer step's temporaries in stage ``stage_index`` (see the module
    docstring)."""
    if strategy not in STRATEGIES:
        raise ValueError(f'strategy must be one of {STRATEGIES}')
    if strategy == 'ep' and gpus % ep_size:
        raise ValueError(f'--ep-size {ep_size} must divide --gpus {gpus}')
    shard = ep_size if strategy == 'ep' else 1
    frozen_at_build = counts['frozen_at_build']

    def per_gpu(role, numel):
        return numel / shard if role == 'residual' else numel

    def trainable(role, stage):
        return role not in stages[stage][1]

    params = sum(per_gpu(r, counts[r]) for r in ROLES)
    grads = sum(
        per_gpu(r, counts[r] - frozen_at_build[r]) for r in ROLES
        if trainable(r, stage_index))
    buckets = 0
    if gpus > 1:
        buckets = sum(counts[r] - frozen_at_build[r] for r in ROLES
                      if trainable(r, stage_index)
                      and not (strategy == 'ep' and r == 'residual'))
    with_state = sum(
        per_gpu(r, counts[r] - frozen_at_build[r]) for r in ROLES if any(
            trainable(r, s) for s in range(stage_index + 1)))
    optimizer = states * with_state
    updated = grads  # what this rank's optimizer step updates
    if strategy == 'zero' or (zero and strategy != 'ep'):
        optimizer /= gpus
        updated /= gpus
    return dict(
        params=4 * params + counts['buffer_bytes'],
        grads=4 * grads,
        ddp_buckets=4 * buckets,
        optimizer=4 * optimizer,
        step_temporaries=4 * updated)


# ----------------------------------------------------------- activations
def synthetic_batch(model,
                    cfg: Config,
                    batch: int,
                    size: Tuple[int, int],
                    seed: int = 0) -> dict:
    """A training batch of ``batch`` random images of ``size`` with random
    labels (mmseg: a label map; mmdet: :data:`INSTANCES` boxes with masks
    per image, a busy COCO image), as the data preprocessor receives it."""
    gen = torch.Generator().manual_seed(seed)
    height, width = size
    images = [
        torch.randint(
            0, 256, (3, height, width), generator=gen, dtype=torch.uint8)
        for _ in range(batch)
    ]
    if cfg.default_scope == 'mmseg':
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample
        head = cfg.model.decode_head
        classes = head.num_classes if isinstance(head, dict) else \
            head[-1].num_classes
        samples = [
            SegDataSample(
                gt_sem_seg=PixelData(
                    data=torch.randint(
                        0, classes, (1, height, width), generator=gen)),
                metainfo=dict(img_shape=size, ori_shape=size))
            for _ in range(batch)
        ]
        # The preprocessor pads to the config's crop size; measure this one.
        model.data_preprocessor.size = size
    else:
        import numpy as np
        from mmdet.structures import DetDataSample
        from mmdet.structures.mask import BitmapMasks
        from mmengine.structures import InstanceData
        classes = cfg.model.roi_head.bbox_head.num_classes
        samples = []
        for _ in range(batch):
            corners = torch.rand(
                INSTANCES, 4, generator=gen) * torch.tensor(
                    [width, height, width, height])
            boxes = torch.cat([
                torch.minimum(corners[:, :2], corners[:, 2:]),
                torch.maximum(corners[:, :2], corners[:, 2:]) + 8
            ], 1).clamp(max=torch.tensor([width, height] * 2) - 1)
            masks = np.zeros((INSTANCES, height, width), dtype=np.uint8)
            for mask, (x1, y1, x2, y2) in zip(masks, boxes.int().tolist()):
                mask[y1:y2, x1:x2] = 1
            sample = DetDataSample(
                metainfo=dict(
                    img_shape=size, ori_shape=size, scale_factor=(1., 1.)))
            sample.gt_instances = InstanceData(
                bboxes=boxes,
                labels=torch.randint(0, classes, (INSTANCES, ), generator=gen),
                masks=BitmapMasks(masks, height, width))
            samples.append(sample)
    return dict(inputs=images, data_samples=samples)


def freeze(model, frozen: frozenset) -> None:
    """``requires_grad`` as ``RMoEStageHook`` sets it for a stage (roles in
    ``frozen`` off, the rest as built)."""
    for role, named in split_parameters(model).items():
        if role in frozen:
            for _, param in named:
                param.requires_grad_(False)


def saved_tensor_bytes(model,
                       data: dict,
                       amp: bool = False) -> Tuple[int, int]:
    """Bytes of the storages autograd saves in one training forward of
    ``data`` (each storage once, parameters excluded), and of the largest
    one."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: Dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        if pointer not in params and storage.device.type != 'meta':
            seen[pointer] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            autocast(model, amp):
        data = model.data_preprocessor(data, training=True)
        losses = model(**data, mode='loss')
    del losses
    return sum(seen.values()), max(seen.values(), default=0)


@contextlib.contextmanager
def autocast(model, enabled: bool):
    """bf16 autocast for the forward of ``model``. A detector runs only its
    backbone and neck (``extract_feat``) under it, its heads in fp32:
    mmcv's CPU NMS has no bf16 kernel. Its AMP activations are therefore
    an upper bound."""
    device = next(model.parameters()).device.type
    if not enabled:
        yield
        return
    if not hasattr(model, 'rpn_head'):
        with torch.autocast(device, dtype=torch.bfloat16):
            yield
        return
    extract_feat = model.extract_feat

    def extract_feat_autocast(*args, **kwargs):
        with torch.autocast(device, dtype=torch.bfloat16):
            feats = extract_feat(*args, **kwargs)
        return tuple(f.float() for f in feats)

    model.extract_feat = extract_feat_autocast
    try:
        yield
    finally:
        del model.extract_feat


def activation_fit(model,
                   cfg: Config,
                   frozen: frozenset,
                   sizes: Sequence[Tuple[int, int]],
                   amp: bool = False,
                   batch: int = 2) -> Tuple[float, float, float]:
    """``(a, b, floor)``: activation bytes per image ``= max(a + b * pixels,
    floor)``: the least-squares line through the measurements at ``sizes``
    (batch ``batch``, divided; 2 for segmentors, whose pooled BatchNorm
    needs it, 1 for detectors), never below the largest measurement
    (``floor``; a detector's RoI heads cost about the same at any size, and
    their share varies with the random proposals). The bytes are the saved
    storages plus twice the largest one: the backward pass starts by
    allocating the gradient of that tensor and of its input while
    everything saved is still alive."""
    state = {p: p.requires_grad for p in model.parameters()}
    freeze(model, frozen)
    try:
        pixels, values = [], []
        for size in sizes:
            data = synthetic_batch(model, cfg, batch, size)
            saved, largest = saved_tensor_bytes(model, data, amp)
            pixels.append(size[0] * size[1])
            values.append((saved + 2 * largest) / batch)
    finally:
        for param, requires_grad in state.items():
            param.requires_grad_(requires_grad)
    mean_p, mean_v = sum(pixels) / len(pixels), sum(values) / len(values)
    slope = sum(
        (p - mean_p) * (v - mean_v) for p, v in zip(pixels, values)) / sum(
            (p - mean_p)**2 for p in pixels)
    slope = max(slope, 0.)
    return mean_v - slope * mean_p, slope, max(values)


# ------------------------------------------------------------ measurement
def measure_peak(cfg: Config,
                 frozen: frozenset,
                 batch: int,
                 size: Tuple[int, int],
                 device: str = 'cpu',
                 amp: bool = False) -> int:
    """Peak allocated bytes of a real training step on one device: the
    model, its optimizer (built before the freezing, as the runner and
    ``RMoEStageHook`` do), one warm-up step so the optimizer state exists,
    then the measured step (forward, backward, step, ``zero_grad``; the
    forward under autocast with ``amp``: fp16 on CUDA, bf16 on the CPU).
    CUDA: ``torch.cuda.max_memory_allocated``; CPU: the profiler's memory
    timeline (every category summed)."""
    from mmengine.optim import build_optim_wrapper
    model = build_model(cfg).to(device)
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    freeze(model, frozen)

    kind = torch.device(device).type
    dtype = torch.float16 if kind == 'cuda' else torch.bfloat16

    def step(seed):
        data = synthetic_batch(model, cfg, batch, size, seed=seed)
        data = model.data_preprocessor(data, training=True)
        with torch.autocast(kind, dtype=dtype, enabled=amp):
            losses = model(**data, mode='loss')
        loss, _ = model.parse_losses(losses)
        optim_wrapper.update_params(loss)

    step(0)
    if kind == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step(1)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    import tempfile
    import warnings

    from torch.profiler import ProfilerActivity, profile
    with profile(
            activities=[ProfilerActivity.CPU],
            profile_memory=True,
            record_shapes=True,
            with_stack=True) as prof:
        step(1)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)  # still works
        path = osp.join(tmp, 'timeline.json')
        prof.export_memory_timeline(path, device='cpu')
        with open(path) as f:
            _, sizes = json.load(f)
    return int(max(sum(row) for row in sizes))


# ------------------------------------------------------------------ main
def estimate(cfg: Config,
             gpus: int = 8,
             strategies: Sequence[str] = STRATEGIES,
             ep_size: Optional[int] = None,
             batch: Optional[int] = None,
             size: Optional[Tuple[int, int]] = None,
             measure_sizes: Optional[Sequence[Tuple[int, int]]] = None,
             amp: bool = False,
             activation_model=None,
             fit_cache: Optional[dict] = None) -> dict:
    """The estimate of the module docstring for every stage and strategy.

    ``activation_model`` measures the activations instead of a model built
    from ``cfg``; ``fit_cache`` (a dict) keeps its fits for the next call
    with the same model.

    Returns a dict with ``rows``: one dict per (stage, strategy) with the
    byte counts, and the inputs that produced it.
    """
    meta_model = build_model(cfg, meta=True)
    counts = parameter_counts(meta_model)
    stages, from_config = pipeline_stages(cfg)
    name, states, zero = optimizer_states(cfg)
    batch = batch or cfg.train_dataloader.batch_size
    size = tuple(size or training_input(cfg))
    detection = cfg.default_scope == 'mmdet'
    if measure_sizes is None:  # three smaller inputs, same aspect ratio
        # Detection needs larger ones: below ~320 x 512 its bytes per pixel
        # still fall (anchors, proposals, padding) and the line is too flat.
        if detection:
            scale, steps = min(1., 864 / max(size)), (.6, .8, 1.)
        else:
            scale, steps = min(1., 256 / max(size)), (.5, .75, 1.)
        measure_sizes = [(32 * max(2, round(size[0] * scale * f / 32)),
                          32 * max(2, round(size[1] * scale * f / 32)))
                         for f in steps]
    model = activation_model or build_model(cfg)
    fits = {} if fit_cache is None else fit_cache
    keys = {}
    for _, frozen in stages:
        keys[frozen] = (frozen, amp, tuple(map(tuple, measure_sizes)))
        if keys[frozen] not in fits:
            fits[keys[frozen]] = activation_fit(
                model,
                cfg,
                frozen,
                measure_sizes,
                amp,
                batch=1 if detection else 2)
    rows = []
    for index, (stage, frozen) in enumerate(stages):
        intercept, slope, floor = fits[keys[frozen]]
        activations = batch * max(intercept + slope * size[0] * size[1], floor)
        for strategy in strategies:
            row = account(counts, stages, index, strategy, gpus, ep_size
                          or gpus, states, zero)
            row.update(
                stage=stage,
                strategy=strategy,
                activations=activations,
                total=row['params'] + row['ddp_buckets'] + row['optimizer'] +
                row['grads'] + max(activations, row['step_temporaries']))
            rows.append(row)
    return dict(
        rows=rows,
        gpus=gpus,
        ep_size=ep_size or gpus,
        batch=batch,
        input=size,
        measured_at=[tuple(s) for s in measure_sizes],
        amp=amp,
        optimizer=f'{"ZeRO " if zero else ""}{name} ({states} states)',
        stages_from_config=from_config,
        params={role: counts[role]
                for role in ROLES},
        residual_layers=counts['residual_layers'])


def format_table(result: dict) -> str:
    cols = ('params', 'grads', 'ddp_buckets', 'optimizer', 'activations',
            'step_temporaries', 'total')
    lines = [
        f'{result["gpus"]} GPU(s), batch {result["batch"]} per GPU, input '
        f'{result["input"][0]}x{result["input"][1]}, '
        f'{result["optimizer"]}, activations '
        f'{"bf16/fp16 (--amp)" if result["amp"] else "fp32"} measured at ' +
        ', '.join(f'{h}x{w}' for h, w in result['measured_at']),
        'parameters: ' + ', '.join(f'{role} {n / 1e6:.1f}M'
                                   for role, n in result['params'].items()),
        '',
        '| stage | strategy | ' + ' | '.join(cols) + ' |',
        '|' + '---|' * (len(cols) + 2),
    ]
    for row in result['rows']:
        lines.append(f'| {row["stage"]} | {row["strategy"]} | ' +
                     ' | '.join(f'{row[c] / GiB:.2f}' for c in cols) + ' |')
    lines.append('(GiB per GPU)')
    if not result['stages_from_config']:
        lines.append('No RMoEStageHook in the config: RMoE-I\'s two stages '
                     'are shown.')
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Per-GPU training memory of a config')
    parser.add_argument('config')
    parser.add_argument('--gpus', type=int, default=8)
    parser.add_argument(
        '--strategy', choices=(*STRATEGIES, 'all'), default='all')
    parser.add_argument(
        '--ep-size',
        type=int,
        help='expert-parallel group size (default: --gpus)')
    parser.add_argument(
        '--batch', type=int, help='images per GPU (default: the config)')
    parser.add_argument(
        '--input',
        type=int,
        nargs=2,
        metavar=('H', 'W'),
        help='training input size (default: from the config)')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='activations under mixed precision (bf16 autocast here)')
    parser.add_argument(
        '--measure-experts',
        type=int,
        help='build the model that measures activations with this many '
        'experts (activations do not depend on it, memory here does)')
    parser.add_argument(
        '--measure',
        action='store_true',
        help='also run one real training step per stage on --device at the '
        'training input and print its peak beside the 1-GPU estimate')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    parser.add_argument('--json', help='also write the result here')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_cfg(args.config, args.cfg_options)
    activation_model = None
    if args.measure_experts:
        small = load_cfg(args.config, args.cfg_options)
        small.model.backbone.moe_cfg.num_experts = args.measure_experts
        activation_model = build_model(small)
    torch.manual_seed(0)
    result = estimate(
        cfg,
        gpus=args.gpus,
        strategies=STRATEGIES if args.strategy == 'all' else (args.strategy, ),
        ep_size=args.ep_size,
        batch=args.batch,
        size=args.input,
        amp=args.amp,
        activation_model=activation_model)
    result['config'] = osp.relpath(args.config)
    print(format_table(result))
    if args.measure:
        single = estimate(
            cfg,
            gpus=1,
            strategies=('ddp', ),
            batch=result['batch'],
            size=result['input'],
            amp=args.amp,
            activation_model=activation_model)
        result['measured'] = []
        print(f'\nOne training step on {args.device}, batch '
              f'{result["batch"]}, input {result["input"]}:')
        for (stage,
             frozen), row in zip(pipeline_stages(cfg)[0], single['rows']):
            peak = measure_peak(cfg, frozen, result['batch'], result['input'],
                                args.device, args.amp)
            result['measured'].append(
                dict(stage=stage, estimate=row['total'], peak=peak))
            print(f'{stage}: estimate {row["total"] / GiB:.3f} GiB, '
                  f'measured peak {peak / GiB:.3f} GiB '
                  f'({row["total"] / peak:.2f}x)')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == '__main__':
    main()
