"""RMoE training stages: the weight core frozen first, then everything trains.

RMoE-I (paper, Sec. "pipelines") trains a converted dense model in two
stages: an *intermediate* stage where the core ``theta_0`` (every backbone
weight that is not an expert residual or a router) stays at its dense value
while the residuals and routers learn, then a *finetune* stage where everything
trains. :class:`RMoEStageHook` runs such a schedule inside one mmengine runner.

How a stage freezes parameters, and why that way:

- ``requires_grad`` is switched off, so frozen parameters get no gradient at
  all: no update, no momentum, no weight decay (torch's optimizers skip a
  parameter whose ``grad`` is None), and backward skips their weight
  gradients, which is what makes the intermediate stage cheap.
- mmengine builds the optimizer in ``Runner.train()`` *before* any hook runs
  and drops parameters that do not require grad; the hook only freezes in
  ``before_train``, so the optimizer holds every parameter that will ever
  train (checked, with a clear error).
- DDP registers the parameters that require grad when it wraps the model and
  then waits for a gradient of each of them. At every change of the trainable
  set the hook re-wraps the module in a new DDP (same wrapper config as the
  runner's), after removing the old wrapper's autograd hooks. DDP then reduces
  exactly the trainable parameters: no ``find_unused_parameters`` needed, and
  no communication for the frozen core.
- Running statistics of BatchNorm layers whose parameters are all frozen are
  frozen too (the layers run in eval mode), so nothing in a frozen part moves.

The stage is a function of the iteration (or epoch) alone, so resuming in the
middle of a stage restores that stage.
"""
import copy
import logging
from typing import Dict, List, Optional, Sequence, Union

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import MODEL_WRAPPERS
from mmengine.runner import IterBasedTrainLoop
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from rmoe_mm.moe import ROLES, set_aux_grad_scale, split_parameters
from rmoe_mm.moe.params import NamedParams
from rmoe_mm.registry import HOOKS


def aux_grad_scale_from_optim_wrapper(optim_wrapper) -> float:
    """The factor mmengine's optimizer wrapper puts on the next loss it
    backprops, which the injected balance-loss gradient must follow.

    ``AmpOptimWrapper`` multiplies the loss by ``loss_scaler.get_scale()``
    (when its ``GradScaler`` is enabled); every ``OptimWrapper`` divides it by
    the accumulation factor of ``OptimWrapper.scale_loss``:
    ``accumulative_counts``, or the remainder for the last, incomplete window
    of training. Call it before the iteration's backward.

    NOTE: mmengine 0.10.7 has no public accessor for the accumulation
    window, so this reads the same private counters ``scale_loss`` reads.
    """
    scale = 1.0
    scaler = getattr(optim_wrapper, 'loss_scaler', None)
    if scaler is not None and getattr(scaler, 'is_enabled', lambda: True)():
        scale = float(scaler.get_scale())
    counts = getattr(optim_wrapper, '_accumulative_counts', 1)
    if counts > 1:
        remainder = getattr(optim_wrapper, '_remainder_counts', -1)
        max_counts = getattr(optim_wrapper, '_max_counts', -1)
        inner = getattr(optim_wrapper, '_inner_count', 0)
        if remainder > 0 and max_counts > 0 and \
                inner >= max_counts - remainder:
            counts = remainder
    return scale / counts


class Stage:
    """One stage of the schedule: a name, its first iteration/epoch, and the
    parameter roles it freezes."""

    def __init__(self,
                 name: str,
                 begin: int,
                 frozen: Union[str, Sequence[str]] = ()):
        if not isinstance(name, str) or not name:
            raise ValueError(f'a stage name must be a non-empty string, got '
                             f'{name!r}')
        if isinstance(begin, bool) or not isinstance(begin, int) or begin < 0:
            raise ValueError(f'stage {name!r}: begin must be an int >= 0, got '
                             f'{begin!r}')
        frozen = (frozen, ) if isinstance(frozen, str) else tuple(frozen)
        unknown = [role for role in frozen if role not in ROLES]
        if unknown:
            raise ValueError(f'stage {name!r} freezes unknown role(s) '
                             f'{unknown}; roles are {ROLES}')
        if set(frozen) == set(ROLES):
            raise ValueError(f'stage {name!r} freezes every role {ROLES}: '
                             'nothing would train')
        self.name = name
        self.begin = begin
        self.frozen = frozenset(frozen)

    def __repr__(self) -> str:
        return (f'Stage({self.name!r}, begin={self.begin}, '
                f'frozen={sorted(self.frozen)})')


def _build_stages(stages: Sequence[dict]) -> List[Stage]:
    if isinstance(stages, dict) or not stages:
        raise ValueError('stages must be a non-empty list of dicts like '
                         "dict(name='intermediate', begin=0, frozen=['core'])")
    built = []
    for spec in stages:
        if not isinstance(spec, dict):
            raise ValueError(f'each stage must be a dict, got {spec!r}')
        unknown = sorted(set(spec) - {'name', 'begin', 'frozen'})
        if unknown:
            raise ValueError(f'stage {spec.get("name")!r} has unknown key(s) '
                             f'{unknown}; a stage has name, begin, frozen')
        built.append(Stage(**spec))
    if built[0].begin != 0:
        raise ValueError(f'the first stage must begin at 0, got {built[0]}')
    for previous, stage in zip(built, built[1:]):
        if stage.begin <= previous.begin:
            raise ValueError('stages must begin in strictly increasing order, '
                             f'got {previous} before {stage}')
    names = [stage.name for stage in built]
    if len(set(names)) != len(names):
        raise ValueError(f'stage names must be unique, got {names}')
    return built


def rewrap_ddp(runner) -> None:
    """Wrap ``runner.model``'s module in a new DDP built like the runner's.

    DDP fixes the set of parameters it reduces (those that require grad) at
    construction, so a change of that set needs a new wrapper. The old
    wrapper's autograd hooks are removed first, so that only the new reducer
    sees the gradients. The construction mirrors ``Runner.wrap_model`` (same
    ``model_wrapper_cfg`` and ``find_unused_parameters``, the old wrapper's
    ``device_ids``) without repeating its SyncBN conversion, which has been
    done.
    """
    old = runner.model
    if not isinstance(old, DistributedDataParallel):
        raise TypeError(
            f'RMoEStageHook can re-wrap DistributedDataParallel models only, '
            f'got {type(old).__name__}; use a DDP wrapper '
            '(MMDistributedDataParallel or a subclass)')
    module = old.module
    old._remove_autograd_hooks()
    wrapper_cfg = runner.cfg.get('model_wrapper_cfg')
    if wrapper_cfg is None:
        wrapper_cfg = dict(
            type='MMDistributedDataParallel',
            broadcast_buffers=False,
            find_unused_parameters=runner.cfg.get('find_unused_parameters',
                                                  False))
    else:
        wrapper_cfg = copy.deepcopy(dict(wrapper_cfg))
        wrapper_cfg.setdefault('type', 'MMDistributedDataParallel')
    wrapper_type = wrapper_cfg['type']
    if isinstance(wrapper_type, str):
        wrapper_type = MODEL_WRAPPERS.get(wrapper_type)
    default_args = dict(module=module)
    if issubclass(wrapper_type, DistributedDataParallel):
        # What the runner's wrapper got: [LOCAL_RANK] on a GPU, None on a CPU.
        default_args['device_ids'] = old.device_ids
    runner.model = MODEL_WRAPPERS.build(wrapper_cfg, default_args=default_args)
    # Runner.train() compiles the wrapper's train_step when cfg.compile is
    # set; the new wrapper needs the same (a no-op without cfg.compile).
    maybe_compile = getattr(runner, '_maybe_compile', None)
    if maybe_compile is not None:
        maybe_compile('train_step')


def _optimizer_param_ids(optim_wrapper) -> set:
    wrappers = optim_wrapper.values() if hasattr(
        optim_wrapper, 'optim_wrappers') else [optim_wrapper]
    return {
        id(param)
        for wrapper in wrappers
        for group in wrapper.optimizer.param_groups
        for param in group['params']
    }


@HOOKS.register_module()
class RMoEStageHook(Hook):
    """Trains an RMoE model through a schedule of stages that freeze roles.

    A stage is ``dict(name=..., begin=..., frozen=[...])``: it starts at
    iteration (or epoch) ``begin``, 0-based, and lasts until the next stage
    begins; ``frozen`` lists the parameter roles that do not train in it:
    ``'core'`` (every backbone parameter that is not a residual or a router),
    ``'residual'``, ``'router'`` and ``'heads'`` (everything outside the
    backbone: necks and heads). RMoE-I, 1000 intermediate iterations::

        custom_hooks = [dict(type='RMoEStageHook', stages=[
            dict(name='intermediate', begin=0, frozen=['core']),
            dict(name='finetune', begin=1000)])]

    A single stage with ``frozen=['core']`` keeps the core frozen for the
    whole run. Parameters that do not require grad when training starts
    (e.g. Swin's ``frozen_stages``) are left alone.

    The hook also keeps the model's injected balance-loss gradient on the
    scale of the main loss (AMP loss scale, gradient accumulation) before
    every iteration (:func:`rmoe_mm.moe.set_aux_grad_scale`), and publishes
    the stage: ``message_hub`` info ``'rmoe_stage'`` (its name) and scalar
    ``'train/rmoe_stage'`` (its index).

    Args:
        stages (list[dict]): The schedule; the first stage begins at 0.
        by_epoch (bool): ``begin`` counts epochs (a stage then starts at the
            first iteration of that epoch) instead of iterations.
            Default: False.
        backbone (str, optional): Dotted path of the backbone in the model;
            None if the whole model is the backbone. Default: ``'backbone'``.
        freeze_norm_stats (bool): Run BatchNorm layers whose parameters are
            all frozen in eval mode, so their running statistics stay put.
            Default: True.
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self,
                 stages: Sequence[dict],
                 by_epoch: bool = False,
                 backbone: Optional[str] = 'backbone',
                 freeze_norm_stats: bool = True):
        self.stages = _build_stages(stages)
        self.by_epoch = by_epoch
        self.backbone = backbone
        self.freeze_norm_stats = freeze_norm_stats
        self.current: Optional[Stage] = None
        self._roles: Dict[str, NamedParams] = {}
        self._frozen_norms: List[nn.Module] = []

    def stage_at(self, position: int) -> Stage:
        """The stage that iteration (or epoch) ``position`` belongs to."""
        return [stage for stage in self.stages if stage.begin <= position][-1]

    def before_train(self, runner) -> None:
        if self.by_epoch and isinstance(runner.train_loop, IterBasedTrainLoop):
            raise ValueError('RMoEStageHook(by_epoch=True) needs an '
                             'epoch-based train loop, got IterBasedTrainLoop; '
                             'use by_epoch=False and begin in iterations')
        end = runner.max_epochs if self.by_epoch else runner.max_iters
        for stage in self.stages[1:]:
            if stage.begin >= end:
                print_log(
                    f'RMoEStageHook: {stage} begins at or after the end '
                    f'of training ({end}) and will not run',
                    logger='current',
                    level=logging.WARNING)
        roles = split_parameters(self._model(runner), self.backbone)
        # Only what trains now is managed; frozen_stages & co. stay frozen.
        self._roles = {
            role: [(n, p) for n, p in named if p.requires_grad]
            for role, named in roles.items()
        }
        in_optimizer = _optimizer_param_ids(runner.optim_wrapper)
        missing = [
            n for named in self._roles.values() for n, p in named
            if id(p) not in in_optimizer
        ]
        if missing:
            raise RuntimeError(
                f'{len(missing)} trainable parameter(s) are not in the '
                f'optimizer (e.g. {missing[:3]}): a parameter that was frozen '
                'when mmengine built the optimizer can never train. Let '
                'RMoEStageHook do the freezing instead of freezing in the '
                'model or config.')
        if any('core' in stage.frozen
               for stage in self.stages) and not (self._roles['residual']
                                                  or self._roles['router']):
            print_log(
                'RMoEStageHook: the model has no trainable RMoE '
                'residual or router; freezing the core freezes the '
                'whole backbone',
                logger='current',
                level=logging.WARNING)
        self.current = None
        self._switch(runner, self.stage_at(self._position(runner)))

    def before_train_iter(self,
                          runner,
                          batch_idx: int,
                          data_batch=None) -> None:
        stage = self.stage_at(self._position(runner))
        if stage is not self.current:
            self._switch(runner, stage)
        # model.train() runs before every iteration/epoch; undo it here.
        for norm in self._frozen_norms:
            norm.eval()
        set_aux_grad_scale(
            self._model(runner),
            aux_grad_scale_from_optim_wrapper(runner.optim_wrapper))
        runner.message_hub.update_scalar('train/rmoe_stage',
                                         self.stages.index(stage))

    def after_train(self, runner) -> None:
        set_aux_grad_scale(self._model(runner), 1.0)

    @staticmethod
    def _model(runner) -> nn.Module:
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    def _position(self, runner) -> int:
        return runner.epoch if self.by_epoch else runner.iter

    def _switch(self, runner, stage: Stage) -> None:
        changed = False
        for role, named in self._roles.items():
            trains = role not in stage.frozen
            for _, param in named:
                if param.requires_grad != trains:
                    param.requires_grad_(trains)
                    changed = True
                if not trains:
                    param.grad = None
        self._frozen_norms = self._find_frozen_norms(self._model(runner))
        if changed and is_model_wrapper(runner.model):
            rewrap_ddp(runner)
        self.current = stage
        runner.message_hub.update_info('rmoe_stage', stage.name)
        counts = ', '.join(
            f'{role} {sum(p.numel() for _, p in named)} '
            f'({"frozen" if role in stage.frozen else "trains"})'
            for role, named in self._roles.items())
        unit = 'epoch' if self.by_epoch else 'iter'
        print_log(
            f"RMoE stage '{stage.name}' from {unit} "
            f'{self._position(runner)}; parameters: {counts}',
            logger='current')

    def _find_frozen_norms(self, model: nn.Module) -> List[nn.Module]:
        if not self.freeze_norm_stats:
            return []
        trainable = {
            id(p)
            for named in self._roles.values()
            for _, p in named if p.requires_grad
        }
        managed = {id(p) for named in self._roles.values() for _, p in named}
        norms = []
        for module in model.modules():
            params = [id(p) for p in module.parameters(recurse=False)]
            if (isinstance(module, _BatchNorm) and params
                    and all(i in managed and i not in trainable
                            for i in params)):
                norms.append(module)
        return norms
