"""Training cost of each pipeline of a task, upstream pretraining included.

    python tools/analysis/pipeline_cost.py SPEC [--pipelines P ...]
        [--batch-size 2] [--scale 1.0] [--repeats 5] [--no-measure]
        [--count-backward] [--json OUT] [--cfg-options k=v ...]

SPEC is a pipeline spec (``configs/pipelines/specs/``; format in
``rmoe_mm/engine/pipeline_spec.py``). For every stage of the chosen
pipelines the tool reads

- its **schedule** from its config: ``max_iters`` (images = iterations x
  ``batch_size`` x ``world_size``) or ``max_epochs`` (images = epochs x
  ``dataset_size``), split into the stages of its ``RMoEStageHook`` (each
  with its frozen roles). ``world_size`` and ``dataset_size`` are not in the
  configs: they are the stage's ``cost`` entry in the spec (documented
  defaults there; override with ``--cfg-options
  stages.dense_pretrain.cost.dataset_size=...``), as are the schedules of
  upstream stages a user does not run (Swin-T's 300 ImageNet-1k epochs, MoE
  pretraining from scratch): they are ordinary configs whose ``max_epochs``
  can be overridden the same way
  (``stages.dense_pretrain.options.train_cfg.max_epochs=...``);
- its **time per iteration** in each of those modes, measured here: full
  training iterations (``model.train_step``: preprocessing, forward,
  backward, optimizer step) on a synthetic batch of ``--batch-size`` images
  (0: the config's own per-GPU batch) at the config's training input size
  times ``--scale``, every variant interleaved with the others (so that
  other load on the machine hits them alike), median of ``--repeats``; the
  time per image is the median over the batch size. NOTE an MoE layer's
  overhead per image depends on the tokens each expert gets per call: time
  at the configs' batch sizes and input sizes for figures to quote;
- its **training FLOPs per image** in each mode, counted at the config's
  input size (``--scale`` applies): forward FLOPs per matmul and convolution
  as fvcore / torch's flop counter count them (2 per multiply-add), and the
  backward by this rule: each matmul or convolution costs its forward once
  more for every operand that needs a gradient. A trained weight applied to
  an activation that carries a gradient costs 2x its forward; a frozen
  weight 1x (the activation's gradient only); a trained first layer 1x (its
  weight's gradient only); frozen layers below every trained parameter 0x.
  Attention's activation x activation products cost 2x where their inputs
  carry a gradient. An RMoE FFN counts as one layer whose weights train when
  its core or its residuals do, with its forward FLOPs from its sizes
  (:func:`rmoe_ffn_flops`: router + top-k experts, whatever kernel runs
  them). ``--count-backward`` also runs the backward pass under torch's
  flop counter as a check.

The cost of a pipeline is the sum over its stages of images x cost per
image; the table gives it relative to the dense pipeline (the paper's
"additional training cost") and to the full-MoE pipeline (its "saving"),
measured (time) and analytic (FLOPs), and ``--json`` writes everything.
Model weights are not needed: ``init_cfg`` checkpoints are skipped.
"""
import argparse
import json
import math
import os.path as osp
import statistics
import sys
import time
from collections import OrderedDict

import torch
from mmengine.config import Config, DictAction
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, REPO_ROOT)
import rmoe_mm  # noqa: E402,F401  registers the models, hooks, initialisers
from rmoe_mm.engine.pipeline_spec import PipelineSpec  # noqa: E402
from rmoe_mm.moe import split_parameters  # noqa: E402
from rmoe_mm.moe.naming import ROUTER, moe_role  # noqa: E402
from rmoe_mm.moe.residual_ffn import RMoEFFN  # noqa: E402

# Tensor arguments of an op that are its matmul / convolution operands (the
# rest are biases and options); ops not listed: every tensor argument.
OPERANDS = {
    'mm': (0, 1),
    'bmm': (0, 1),
    'addmm': (1, 2),
    'baddbmm': (1, 2),
    'convolution': (0, 1),
    '_convolution': (0, 1),
    'convolution_overrideable': (0, 1),
    '_slow_conv2d_forward': (0, 1),
}


def rmoe_ffn_flops(ffn, tokens: int) -> int:
    """Forward FLOPs of an RMoE FFN on ``tokens`` tokens, from its sizes.

    Per token: the router (``C x E``) and ``top_k`` experts, each fc1 + fc2
    with weight ``W_core + R_e`` (2 FLOPs per multiply-add), for a low-rank
    residual ``x W_core^T + (x B_e^T) A_e^T``. This is the layer's
    arithmetic, whichever kernel computes it (padding, fused loops).
    """
    channels, hidden = ffn.embed_dims, ffn.feedforward_channels
    experts, top_k = ffn.router.num_experts, ffn.router.top_k
    expert = 4 * channels * hidden + _low_rank_flops(ffn.residual.fc1) + \
        _low_rank_flops(ffn.residual.fc2)
    return tokens * (2 * channels * experts + top_k * expert)


def _low_rank_flops(residual) -> int:
    """Extra forward FLOPs per token of a low-rank expert residual
    (:class:`~rmoe_mm.moe.experts.ResidualLinear`): ``x B^T`` then ``A``;
    a full residual is added to the core weight, at no extra matmul."""
    if residual.rank is None:
        return 0
    return 2 * residual.rank * (residual.in_features + residual.out_features)


def _rmoe_ffn_trains(ffn) -> bool:
    return any(p.requires_grad for name, p in ffn.named_parameters()
               if moe_role(name) != ROUTER)


#: Modules priced as one layer: class -> (forward FLOPs(module, tokens),
#: whether its weights train).
UNITS = {RMoEFFN: (rmoe_ffn_flops, _rmoe_ffn_trains)}


# ----------------------------------------------------------------- FLOPs
class TrainingFlops(TorchDispatchMode):
    """Count forward FLOPs and the backward FLOPs of the rule (module doc).

    Use around a forward pass in training mode; ``forward`` and
    ``backward`` hold the totals. Parameters' ``requires_grad`` must already
    say what trains.

    Args:
        model (nn.Module): The model, whose :data:`UNITS` get hooks.
    """

    def __init__(self, model):
        super().__init__()
        self.forward = 0
        self.backward = 0
        self._units = []
        self._handles = []
        for module in model.modules():
            unit = next(
                (u for cls, u in UNITS.items() if isinstance(module, cls)),
                None)
            if unit is not None:
                self._handles += [
                    module.register_forward_pre_hook(
                        self._enter(*unit), with_kwargs=True),
                    module.register_forward_hook(self._leave)
                ]

    def _enter(self, flops_of, trains):

        def hook(module, args, kwargs):
            x = args[0] if args else kwargs['x']
            flops = flops_of(module, x.numel() // x.shape[-1])
            self._units.append(
                (flops, int(x.requires_grad) + int(trains(module))))

        return hook

    def _leave(self, module, args, output):
        flops, factor = self._units.pop()
        self.forward += flops
        self.backward += flops * factor

    def remove(self):
        for handle in self._handles:
            handle.remove()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func._overloadpacket
        if packet not in flop_registry:
            decomposed = NotImplemented
            if hasattr(func, 'decompose'):
                with self:
                    decomposed = func.decompose(*args, **kwargs)
            return func(*args, **kwargs) \
                if decomposed is NotImplemented else decomposed
        out = func(*args, **kwargs)
        if self._units:  # inside a unit: priced by its formula
            return out
        flops = flop_registry[packet](*args, **kwargs, out_val=out)
        self.forward += flops
        index = OPERANDS.get(packet.__name__)
        operands = [args[i] for i in index] if index else [
            a for a in args if isinstance(a, torch.Tensor)
        ]
        self.backward += flops * sum(
            1 for a in operands
            if isinstance(a, torch.Tensor) and a.requires_grad)
        return out


def count_training_flops(model, loss_fn, check_backward=False):
    """``dict(forward, backward_rule[, counted])`` FLOPs of one step.

    Args:
        model: the model, with ``requires_grad`` set as the stage trains it.
        loss_fn: runs the forward pass and returns the loss to backprop.
        check_backward: also count forward + backward as executed, with
            torch's ``FlopCounterMode`` (``counted``).
    """
    counter = TrainingFlops(model)
    try:
        with counter:
            loss = loss_fn()
    finally:
        counter.remove()
    result = dict(forward=counter.forward, backward_rule=counter.backward)
    if check_backward:
        model.zero_grad(set_to_none=True)
        with FlopCounterMode(display=False) as flop_counter:
            loss = loss_fn()
            if loss.requires_grad:
                loss.backward()
        result['counted'] = flop_counter.get_total_flops()
        model.zero_grad(set_to_none=True)
    return result


# ---------------------------------------------------------- models, data
def build_model(cfg):
    scope = cfg.get('default_scope', 'mmseg')
    init_default_scope(scope)
    registry = {
        'mmseg': 'mmseg.registry',
        'mmdet': 'mmdet.registry',
        'mmpretrain': 'mmpretrain.registry'
    }[scope]
    models = __import__(registry, fromlist=['MODELS']).MODELS
    model_cfg = cfg.model.copy()
    if 'data_preprocessor' in cfg:  # as the Runner merges it
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    torch.manual_seed(0)
    model = models.build(model_cfg)
    _skip_pretrained(model)
    model.init_weights()
    return model.train(), scope


def _skip_pretrained(model):
    """Drop ``init_cfg`` checkpoints: the cost needs no weights."""
    for module in model.modules():
        init = getattr(module, 'init_cfg', None)
        inits = init if isinstance(init, list) else [init]
        if any(isinstance(i, dict) and 'checkpoint' in i for i in inits):
            module.init_cfg = None


def freeze(model, roles):
    """Freeze ``roles`` as RMoEStageHook does (after the optimizer exists)."""
    if not roles:
        return
    groups = split_parameters(model)
    for role in roles:
        for _, param in groups[role]:
            param.requires_grad_(False)
            param.grad = None
    for module in model.modules():
        params = list(module.parameters(recurse=False))
        if isinstance(module,
                      _BatchNorm) and params and not any(p.requires_grad
                                                         for p in params):
            module.eval()


def fit_preprocessor(cfg, size):
    """A data preprocessor that pads to a fixed size (mmseg's ``size``)
    pads to ``size`` instead, so a scaled input stays scaled."""
    for preprocessor in (cfg.get('data_preprocessor'),
                         cfg.model.get('data_preprocessor')):
        if isinstance(preprocessor, dict) and \
                preprocessor.get('size') is not None:
            preprocessor['size'] = tuple(size)


def _pipeline_of(cfg):
    dataset = cfg.train_dataloader.dataset
    while 'pipeline' not in dataset and 'dataset' in dataset:
        dataset = dataset.dataset
    return dataset.get('pipeline', [])


def train_input_size(cfg):
    """``(H, W)`` the config trains at: the crop, or the resize scale."""
    for step in _pipeline_of(cfg):
        kind = step.get('type')
        if kind == 'RandomResizedCrop':
            scale = step['scale']
            return (scale,
                    scale) if isinstance(scale, int) else tuple(scale[::-1])
        if kind == 'RandomCrop':
            crop = step['crop_size']
            return (crop, crop) if isinstance(crop, int) else tuple(crop)
    for step in _pipeline_of(cfg):
        if step.get('type') in ('Resize', 'RandomResize') and \
                step.get('scale'):
            scale = step['scale']
            if isinstance(scale, int):
                return scale, scale
            return min(scale), max(scale)  # (w, h) -> the larger fit
    raise ValueError(f'cannot tell the training input size of '
                     f'{cfg.filename}; pass --input-size H W')


def synthetic_batch(cfg, scope, batch_size, size, seed=0):
    """A batch in the layout of ``scope``'s data pipeline output."""
    gen = torch.Generator().manual_seed(seed)
    height, width = size
    inputs = [
        torch.randint(
            0, 256, (3, height, width), generator=gen, dtype=torch.uint8)
        for _ in range(batch_size)
    ]
    meta = dict(
        img_shape=(height, width),
        ori_shape=(height, width),
        pad_shape=(height, width),
        scale_factor=(1., 1.),
        flip=False,
        flip_direction=None)
    samples = []
    for i in range(batch_size):
        if scope == 'mmpretrain':
            from mmpretrain.structures import DataSample
            num_classes = cfg.model.head.num_classes
            sample = DataSample().set_gt_label(i % num_classes)
        elif scope == 'mmseg':
            from mmengine.structures import PixelData
            from mmseg.structures import SegDataSample
            num_classes = cfg.model.decode_head.num_classes
            sample = SegDataSample()
            sample.gt_sem_seg = PixelData(
                data=torch.randint(
                    0, num_classes, (1, height, width), generator=gen))
        else:
            from mmdet.structures import DetDataSample
            from mmdet.structures.mask import BitmapMasks
            from mmengine.structures import InstanceData
            num_classes = cfg.model.roi_head.bbox_head.num_classes
            count = 4
            xy = torch.rand(
                count, 2, generator=gen) * torch.tensor(
                    [width * 0.6, height * 0.6])
            wh = (0.15 + 0.25 * torch.rand(count, 2, generator=gen)) * \
                torch.tensor([width, height])
            boxes = torch.cat([xy, xy + wh], 1)
            masks = torch.zeros(count, height, width, dtype=torch.uint8)
            for k, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
                masks[k, y0:y1, x0:x1] = 1
            instances = InstanceData(
                bboxes=boxes,
                labels=torch.randint(0, num_classes, (count, ), generator=gen),
                masks=BitmapMasks(masks.numpy(), height, width))
            sample = DetDataSample()
            sample.gt_instances = instances
            sample.ignored_instances = InstanceData(
                bboxes=torch.zeros(0, 4), labels=torch.zeros(0).long())
        sample.set_metainfo(meta)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


# ------------------------------------------------------------ schedules
def stage_modes(cfg):
    """``[(name, frozen roles, fraction of the stage)]`` from the config's
    RMoEStageHook (one full-length unfrozen mode without one)."""
    by_epoch, total = run_length(cfg)
    hook = next((h for h in cfg.get('custom_hooks', [])
                 if h.get('type') == 'RMoEStageHook'), None)
    if hook is None:
        return [('train', (), 1.)]
    if bool(hook.get('by_epoch', False)) != by_epoch:
        unit = 'epochs' if hook.get('by_epoch') else 'iterations'
        raise ValueError(f'{cfg.filename}: RMoEStageHook counts {unit} but '
                         'the train loop the other unit')
    stages = list(hook['stages'])
    modes = []
    for i, stage in enumerate(stages):
        end = stages[i + 1]['begin'] if i + 1 < len(stages) else total
        frozen = stage.get('frozen', ())
        frozen = (frozen, ) if isinstance(frozen, str) else tuple(frozen)
        modes.append((stage['name'], tuple(sorted(frozen)),
                      (end - stage['begin']) / total))
    return modes


def run_length(cfg):
    """``(by_epoch, max_epochs or max_iters)`` of the config's train loop."""
    train = cfg.train_cfg
    if 'max_epochs' in train and train.get('by_epoch', True) and \
            train.get('type') != 'IterBasedTrainLoop':
        return True, train['max_epochs']
    return False, train['max_iters']


def stage_images(cfg, cost):
    """Images the stage trains on (all GPUs together)."""
    by_epoch, length = run_length(cfg)
    if by_epoch:
        if 'dataset_size' not in cost:
            raise ValueError(f'{cfg.filename} trains {length} epochs: give '
                             'the stage a cost=dict(dataset_size=...) in the '
                             'spec')
        return length * cost['dataset_size']
    return length * cfg.train_dataloader.batch_size * cost.get('world_size', 1)


# ---------------------------------------------------------------- timing
def measure(variants, repeats, warmup):
    """Median seconds per iteration of each variant, interleaved."""
    times = {key: [] for key in variants}
    for step in range(warmup + repeats):
        for key, (model, optim_wrapper, batch) in variants.items():
            start = time.perf_counter()
            model.train_step(batch, optim_wrapper)
            if step >= warmup:
                times[key].append(time.perf_counter() - start)
    return {key: statistics.median(values) for key, values in times.items()}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('spec', help='pipeline spec (configs/pipelines/specs)')
    parser.add_argument(
        '--pipelines',
        nargs='+',
        help='pipelines to price (default: every one)')
    parser.add_argument(
        '--batch-size',
        type=int,
        default=2,
        help='images per timed iteration; 0: each config\'s '
        'own (per-GPU) batch size')
    parser.add_argument(
        '--max-batch-size',
        type=int,
        default=None,
        help='cap on the batch size of a timed iteration '
        '(with --batch-size 0: memory)')
    parser.add_argument(
        '--scale',
        type=float,
        default=1.,
        help='input sides x scale, for timing and FLOPs')
    parser.add_argument(
        '--input-size',
        type=int,
        nargs=2,
        default=None,
        metavar=('H', 'W'),
        help='one input size for every stage instead')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument(
        '--no-measure', action='store_true', help='FLOPs only, no timing')
    parser.add_argument(
        '--count-backward',
        action='store_true',
        help='also count an executed backward pass')
    parser.add_argument('--json', help='write the results here')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='overrides merged into the spec')
    return parser.parse_args(argv)


def _strip_init(value):
    if isinstance(value, dict):
        return {k: _strip_init(v) for k, v in value.items() if k != 'init_cfg'}
    if isinstance(value, (list, tuple)):
        return [_strip_init(v) for v in value]
    return value


def variant_key(cfg, frozen, size):
    """Stages whose model (weights aside), optimizer, input size and frozen
    roles agree share one measurement."""
    return json.dumps([
        cfg.get('default_scope'),
        _strip_init(cfg.model.to_dict()),
        cfg.get('data_preprocessor', {}),
        cfg.optim_wrapper.to_dict(), frozen, size
    ],
                      sort_keys=True,
                      default=str)


def load_stage_config(spec, stage):
    info = spec.stages[stage]
    cfg = Config.fromfile(info['config'])
    if info['options']:
        cfg.merge_from_dict(info['options'])
    return cfg


def analyse(args):
    spec = PipelineSpec(args.spec, args.cfg_options)
    pipelines = args.pipelines or list(spec.pipelines)
    stages = list(
        OrderedDict.fromkeys(s for p in pipelines for s in spec.chain(p)))
    report = OrderedDict()
    variants = OrderedDict()
    for stage in stages:
        cfg = load_stage_config(spec, stage)
        cost = dict(spec.stages[stage].get('cost', {}))
        size = tuple(args.input_size) if args.input_size else tuple(
            max(32, int(round(s * args.scale))) for s in train_input_size(cfg))
        images = stage_images(cfg, cost)
        fit_preprocessor(cfg, size)
        modes = []
        for name, frozen, fraction in stage_modes(cfg):
            batch_size = args.batch_size or cfg.train_dataloader.batch_size
            if args.max_batch_size:
                batch_size = min(batch_size, args.max_batch_size)
            key = variant_key(cfg, frozen, size) + f'/{batch_size}'
            if key not in variants:
                model, scope = build_model(cfg)
                optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
                freeze(model, frozen)
                # two images: BatchNorm after a global pooling needs them
                pair = synthetic_batch(cfg, scope, 2, size)

                def loss_fn(model=model, pair=pair):
                    data = model.data_preprocessor(pair, True)
                    losses = model(**data, mode='loss')
                    return sum(v for k, v in losses.items()
                               if 'loss' in k and isinstance(v, torch.Tensor))

                flops = {
                    k: v / 2
                    for k, v in count_training_flops(
                        model, loss_fn, args.count_backward).items()
                }
                variants[key] = dict(
                    model=model,
                    optim_wrapper=optim_wrapper,
                    batch=synthetic_batch(cfg, scope, batch_size, size),
                    batch_size=batch_size,
                    flops=flops,
                    size=size)
                print(
                    f'{stage}/{name}: {cfg.filename}, frozen '
                    f'{list(frozen) or "nothing"}, batch {batch_size} of '
                    f'{size[0]}x{size[1]} px: '
                    f'{flops["forward"] / 1e9:.2f} GFLOPs forward + '
                    f'{flops["backward_rule"] / 1e9:.2f} backward (rule)' +
                    (f', {flops["counted"] / 1e9:.2f} counted fwd+bwd'
                     if 'counted' in flops else ''),
                    flush=True)
            modes.append(
                dict(
                    name=name,
                    frozen=list(frozen),
                    fraction=fraction,
                    images=images * fraction,
                    variant=key))
        report[stage] = dict(
            config=spec.stages[stage]['config'],
            shared=spec.stages[stage]['shared'],
            images=images,
            cost=cost,
            input_size=size,
            modes=modes)
    if not args.no_measure:
        print(
            f'timing {len(variants)} variants x {args.repeats} iterations, '
            'interleaved ...',
            flush=True)
        seconds = measure(
            {
                k: (v['model'], v['optim_wrapper'], v['batch'])
                for k, v in variants.items()
            }, args.repeats, args.warmup)
        for key, value in seconds.items():
            variants[key][
                'seconds_per_image'] = value / variants[key]['batch_size']
    for stage in report.values():
        for mode in stage['modes']:
            variant = variants[mode.pop('variant')]
            flops = variant['flops']
            mode['train_flops_per_image'] = flops['forward'] + \
                flops['backward_rule']
            mode['batch_size'] = variant['batch_size']
            mode['forward_flops_per_image'] = flops['forward']
            if 'counted' in flops:
                mode['counted_flops_per_image'] = flops['counted']
            if 'seconds_per_image' in variant:
                mode['seconds_per_image'] = variant['seconds_per_image']
        stage['flops'] = sum(m['images'] * m['train_flops_per_image']
                             for m in stage['modes'])
        if all('seconds_per_image' in m for m in stage['modes']):
            stage['seconds'] = sum(m['images'] * m['seconds_per_image']
                                   for m in stage['modes'])
    totals = OrderedDict()
    for name in pipelines:
        chain = spec.chain(name)
        totals[name] = dict(
            stages=chain,
            flops=sum(report[s]['flops'] for s in chain),
            seconds=sum(report[s].get('seconds', math.nan) for s in chain),
            per_stage={
                s: dict(
                    flops=report[s]['flops'], seconds=report[s].get('seconds'))
                for s in chain
            })
    return spec, report, totals


def relative(totals, key, base):
    if base not in totals:
        return {}
    return {name: t[key] / totals[base][key] for name, t in totals.items()}


def print_table(report, totals, measured):
    dense = 'dense' if 'dense' in totals else None
    full = 'full_moe' if 'full_moe' in totals else None
    print('\nper stage: images (all GPUs), training FLOPs per image, '
          'measured seconds per image here')
    for stage, info in report.items():
        for mode in info['modes']:
            sec = mode.get('seconds_per_image')
            print(f'  {stage:<22} {mode["name"]:<24} frozen '
                  f'{",".join(mode["frozen"]) or "-":<16} '
                  f'{mode["images"]:>14,.0f} img  '
                  f'{mode["train_flops_per_image"] / 1e9:>9.2f} GFLOPs' +
                  (f'  {sec * 1e3:>9.1f} ms' if sec is not None else ''))
    keys = (['seconds'] if measured else []) + ['flops']
    head = f'\n{"pipeline":<24}'
    for key in keys:
        label = 'time' if key == 'seconds' else 'FLOPs'
        head += f'{label + " vs dense":>16}{label + " vs full MoE":>20}'
    print(head + '   stages')
    for name, total in totals.items():
        line = f'{name:<24}'
        for key in keys:
            for base, width in ((dense, 16), (full, 20)):
                if base is None:
                    line += f'{"-":>{width}}'
                    continue
                ratio = total[key] / totals[base][key]
                line += f'{(ratio - 1) * 100:>+{width - 1}.1f}%'
        print(line + '   ' + ' -> '.join(total['stages']))
    print('(+x% vs dense: additional training cost over the dense pipeline; '
          '-x% vs full MoE: saving against the full-MoE pipeline)')


def main(argv=None):
    args = parse_args(argv)
    from mmengine.logging import MMLogger
    MMLogger.get_instance('pipeline_cost', log_level='WARNING')
    if args.threads:
        torch.set_num_threads(args.threads)
    spec, report, totals = analyse(args)
    print_table(report, totals, not args.no_measure)
    out = dict(
        spec=spec.path,
        batch_size=args.batch_size,
        scale=args.scale,
        repeats=args.repeats,
        threads=torch.get_num_threads(),
        command=' '.join(sys.argv),
        stages=report,
        pipelines=totals,
        time_vs_dense=relative(totals, 'seconds', 'dense'),
        flops_vs_dense=relative(totals, 'flops', 'dense'),
        time_vs_full_moe=relative(totals, 'seconds', 'full_moe'),
        flops_vs_full_moe=relative(totals, 'flops', 'full_moe'))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(out, f, indent=2, default=str)
        print(f'wrote {args.json}')
    return out


if __name__ == '__main__':
    main()
