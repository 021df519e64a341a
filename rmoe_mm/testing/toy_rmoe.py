"""A tiny RMoE model, its data and an mmengine Runner around it, for the hook
tests (and, through ``custom_imports``, for configs of 2-process runs, which
name them ``'rmoe_mm_testing.ToyRMoEClassifier'`` and so on).

The model has what :class:`RMoEStageHook` tells apart: a backbone with a dense
stem, a BatchNorm and an RMoE FFN (shared weights, residuals, router), and a
head outside the backbone. Gate noise and dropout make the forward random, as
in real training, so the resume test also covers randomness.
"""
import os.path as osp
import uuid

import torch
import torch.nn.functional as F
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import BaseModel, is_model_wrapper
from mmengine.runner import Runner
from torch import nn

import rmoe_mm  # noqa: F401  registers the hooks
from rmoe_mm.moe import RMoEFFN
from .registry import DATASETS, HOOKS, MODELS

IN_DIMS, EMBED_DIMS, NUM_CLASSES, NUM_EXPERTS = 6, 8, 3, 4


class ToyBackbone(nn.Module):

    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(IN_DIMS, EMBED_DIMS)
        self.norm = nn.BatchNorm1d(EMBED_DIMS)
        self.drop = nn.Dropout(0.1)
        self.ffn = RMoEFFN(
            EMBED_DIMS,
            2 * EMBED_DIMS,
            num_experts=NUM_EXPERTS,
            gate_noise=0.5,
            residual_std=0.01,
            balance_loss_weight=0.1)

    def forward(self, x):
        return self.ffn(self.drop(self.norm(self.stem(x))))


@MODELS.register_module()
class ToyRMoEClassifier(BaseModel):
    """Backbone (stem, BN, RMoE FFN) + a linear head, cross-entropy loss."""

    def __init__(self, data_preprocessor=None, init_cfg=None):
        super().__init__(
            data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        torch.manual_seed(0)
        self.backbone = ToyBackbone()
        self.head = nn.Linear(EMBED_DIMS, NUM_CLASSES)

    def forward(self, inputs, labels=None, mode='tensor'):
        logits = self.head(self.backbone(inputs))
        if mode == 'loss':
            return dict(loss_cls=F.cross_entropy(logits, labels))
        return logits


@DATASETS.register_module()
class ToyDataset(torch.utils.data.Dataset):
    """``length`` random samples whose label depends on the input."""

    def __init__(self, length=64, seed=0):
        gen = torch.Generator().manual_seed(seed)
        self.inputs = torch.randn(length, IN_DIMS, generator=gen)
        self.labels = self.inputs[:, :NUM_CLASSES].argmax(1)
        self.metainfo = {}

    def __len__(self):
        return len(self.inputs)

    def __getitem__(self, index):
        return dict(inputs=self.inputs[index], labels=self.labels[index])


def toy_runner_cfg(work_dir,
                   stages,
                   max_iters=6,
                   by_epoch=False,
                   checkpoint_interval=1000,
                   log_interval=1,
                   extra_hooks=(),
                   stage_kwargs=None,
                   **overrides):
    """Keyword arguments of an mmengine Runner training the toy model."""
    if by_epoch:
        train_cfg = dict(by_epoch=True, max_epochs=max_iters)
        sampler = dict(type='DefaultSampler', shuffle=True)
    else:
        train_cfg = dict(by_epoch=False, max_iters=max_iters)
        sampler = dict(type='InfiniteSampler', shuffle=True)
    cfg = dict(
        model=ToyRMoEClassifier(),
        work_dir=str(work_dir),
        experiment_name=f'toy_{uuid.uuid4().hex[:8]}',
        train_dataloader=dict(
            dataset=ToyDataset(),
            sampler=sampler,
            batch_size=16,
            num_workers=0,
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(
            optimizer=dict(type='AdamW', lr=0.05, weight_decay=0.1)),
        train_cfg=train_cfg,
        default_hooks=dict(
            logger=dict(type='LoggerHook', interval=log_interval),
            checkpoint=dict(
                type='CheckpointHook',
                interval=checkpoint_interval,
                by_epoch=by_epoch)),
        custom_hooks=[
            dict(
                type='RMoEStageHook',
                stages=stages,
                **{
                    'by_epoch': by_epoch,
                    **(stage_kwargs or {})
                }),
            dict(type='IterationSeedHook'),
            *extra_hooks,
        ],
        randomness=dict(seed=0, deterministic=True),
        default_scope='mmengine',
    )
    cfg.update(overrides)
    return cfg


def build_toy_runner(*args, **kwargs) -> Runner:
    return Runner(**toy_runner_cfg(*args, **kwargs))


def snapshot(module: nn.Module) -> dict:
    """Copies of every parameter and buffer."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@HOOKS.register_module()
class RankParamsDumpHook(Hook):
    """Saves this rank's parameters (``rank{r}_params.pt``) at the end of
    training, and rank 0's at the start and at iteration ``switch``."""

    priority = 'LOWEST'

    def __init__(self, switch):
        self.switch = switch

    def _save(self, runner, name):
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        params = {n: p.detach().clone() for n, p in model.named_parameters()}
        torch.save(params, osp.join(runner.work_dir, name))

    def before_train(self, runner):
        if get_rank() == 0:
            self._save(runner, 'rank0_start.pt')

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter == self.switch and get_rank() == 0:
            self._save(runner, 'rank0_switch.pt')

    def after_train(self, runner):
        self._save(runner, f'rank{get_rank()}_params.pt')
