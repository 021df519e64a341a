"""Scaling strategies in mmengine runs on 2 gloo ranks, against references.

One 2-rank spawn (the ``two_ranks`` fixture) does everything, because
starting processes costs more than the work:

1. the 2-rank expert-parallel layer cases (rmoe_mm/testing/expert_parallel.py);
2. toy RMoE-I runs (core frozen for iterations 0-2, everything trains from
   3, checkpoints at 3 and 6) with the DDP wrapper, ``GatherOnSaveHook`` and
   ``custom_hooks`` that ``setup_distributed`` sets, as ``tools/train.py``
   does: expert-parallel (6 experts, 3 per rank), its resume from iteration
   3, ZeroRedundancyOptimizer (AdamW), its resume, and plain DDP;
3. two iterations of the toy RMoE Swin UperNet config with expert
   parallelism (8 experts, 4 per rank), whose checkpoint one process loads,
   also in ``tools/test.py``.

The reference of the expert-parallel run is a single process holding every
expert that trains on both ranks' batches as DDP semantics define it: one
forward per rank's batch (LayerNorm, so a batch's split does not matter),
the mean of the losses, one AdamW step; the balance loss of each forward
weighs ``1 / world``, as DDP's average of the per-rank gradients does.
"""
import uuid

import pytest
import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.runner import CheckpointLoader, Runner

import rmoe_mm.testing.toy_rmoe  # noqa: F401  registers the toy model
from rmoe_mm.checkpoint.fit import guard_model_loads
from rmoe_mm.engine import setup_distributed
from rmoe_mm.moe import set_aux_grad_scale, split_parameters
from rmoe_mm.moe.parallel import expert_shards
from rmoe_mm.testing import REPO_ROOT, build_model, load_tool
from rmoe_mm.testing.distributed import spawn_gloo
from rmoe_mm.testing.expert_parallel import (CASES_2, check_layer_cases,
                                             prepare_layer_cases,
                                             run_layer_cases)
from rmoe_mm.testing.toy_rmoe import ToyRMoEClassifier, eval_inputs

pytestmark = pytest.mark.slow  # one spawn of 2 processes for the module

SWITCH, ITERS, LR, WEIGHT_DECAY = 3, 6, 0.01, 0.1
#: The expert-parallel toy model: 6 experts, deterministic forward.
EP_MODEL = dict(
    moe_cfg=dict(num_experts=6, gate_noise=0., expert_parallel=True),
    batch_norm=False,
    dropout=0.)
ADAMW = dict(type='AdamW', lr=LR, weight_decay=WEIGHT_DECAY)
ZERO = dict(
    type='ZeroRedundancyOptimizer',
    optimizer_type='AdamW',
    lr=LR,
    weight_decay=WEIGHT_DECAY)
#: name -> (model options, optimizer, run it resumes from iteration 3)
RUNS = {
    'ep': (EP_MODEL, ADAMW, None),
    'ep_resume': (EP_MODEL, ADAMW, 'ep'),
    'zero': ({}, ZERO, None),
    'zero_resume': ({}, ZERO, 'zero'),
    'ddp': ({}, ADAMW, None),
}


def train(out_dir, name):
    model, optimizer, resume_from = RUNS[name]
    cfg = Config(
        dict(
            default_scope='mmengine',
            model=dict(type='rmoe_mm_testing.ToyRMoEClassifier', **model),
            work_dir=str(out_dir / name),
            experiment_name=f'{name}_{uuid.uuid4().hex[:8]}',
            train_dataloader=dict(
                dataset=dict(type='rmoe_mm_testing.ToyDataset'),
                sampler=dict(type='InfiniteSampler', shuffle=True),
                batch_size=8,
                num_workers=0,
                collate_fn=dict(type='default_collate')),
            optim_wrapper=dict(optimizer=optimizer),
            train_cfg=dict(by_epoch=False, max_iters=ITERS),
            default_hooks=dict(
                checkpoint=dict(
                    type='CheckpointHook', interval=SWITCH, by_epoch=False)),
            custom_hooks=[
                dict(
                    type='RMoEStageHook',
                    stages=[
                        dict(name='intermediate', begin=0, frozen=['core']),
                        dict(name='finetune', begin=SWITCH)
                    ]),
                dict(type='IterationSeedHook'),
                dict(type='rmoe_mm_testing.TrainRecordHook'),
            ],
            randomness=dict(seed=0),
            log_level='WARNING'))
    if resume_from:
        cfg.resume = True
        cfg.load_from = str(out_dir / resume_from / f'iter_{SWITCH}.pth')
    setup_distributed(cfg, 'pytorch')  # what tools/train.py does, with
    runner = Runner.from_cfg(cfg)  # its strict checks of resumed state
    guard_model_loads(runner.model, 'resume' if resume_from else 'load_from')
    runner.train()


SWIN_CONFIG = REPO_ROOT / 'configs/toy/rmoe_swin_upernet_toy_ade20k.py'
SWIN_EP = ['model.backbone.moe_cfg.expert_parallel=True']


def swin_image():
    return torch.randn(
        1, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def train_swin(rank, out_dir, data_root):
    """Two iterations of the toy RMoE Swin UperNet, expert-parallel; then
    its checkpoint loaded back into the ranks, and this rank's backbone
    outputs on a fixed image."""
    cfg = Config.fromfile(SWIN_CONFIG)
    cfg.merge_from_dict({
        'model.backbone.moe_cfg.expert_parallel': True,
        'train_dataloader.dataset.data_root': str(data_root),
        'train_dataloader.batch_size': 2,
        'train_cfg.max_iters': 2,
        'default_hooks.checkpoint.interval': 2,
    })
    cfg.param_scheduler = []
    cfg.work_dir = str(out_dir / 'swin')
    cfg.experiment_name = f'swin_{uuid.uuid4().hex[:8]}'
    cfg.log_level = 'WARNING'
    for part in ('val', 'test'):
        cfg[f'{part}_dataloader'] = cfg[f'{part}_cfg'] = None
        cfg[f'{part}_evaluator'] = None
    setup_distributed(cfg, 'pytorch')
    runner = Runner.from_cfg(cfg)
    shards = expert_shards(runner.model.module)
    assert shards and all(p.shape[0] == 4 for p in shards.values())
    runner.train()
    # Each rank loads the full-size checkpoint back into its experts (the
    # zeroed shards must come back for the outputs to match one process).
    with torch.no_grad():
        for shard in shards.values():
            shard.zero_()
    dist.barrier()  # rank 0 may still be writing it
    guard_model_loads(runner.model, 'test')  # strict, as tools/test.py
    runner.load_checkpoint(str(out_dir / 'swin' / 'iter_2.pth'))
    model = runner.model.module.eval()
    with torch.no_grad():
        outs = model.backbone(
            model.data_preprocessor(dict(inputs=[swin_image()[0] *
                                                 255]))['inputs'])
    torch.save(outs, out_dir / 'swin' / f'backbone_rank{rank}.pt')


def _two_rank_worker(rank, world, out_dir, data_root):
    run_layer_cases(rank, world, CASES_2, out_dir / 'layer')
    for name in RUNS:
        train(out_dir, name)
    train_swin(rank, out_dir, data_root)


@pytest.fixture(scope='module')
def two_ranks(tmp_path_factory, toy_ade20k_root):
    out_dir = tmp_path_factory.mktemp('two_ranks')
    prepare_layer_cases(CASES_2, out_dir / 'layer')
    spawn_gloo(_two_rank_worker, 2, out_dir, toy_ade20k_root)
    return out_dir


def load_checkpoint(path):
    """An mmengine checkpoint through mmengine's loader (the project's safe
    loading applies)."""
    return CheckpointLoader.load_checkpoint(str(path), map_location='cpu')


def records(out_dir, name):
    return [torch.load(out_dir / name / f'record_rank{r}.pt') for r in (0, 1)]


def test_layer_on_two_ranks_equals_one_process(two_ranks):
    check_layer_cases(CASES_2, 2, two_ranks / 'layer')


def single_process_reference(ranks):
    """The expert-parallel run, replayed in one process on the ranks'
    batches (see the module doc). Returns the model, its optimizer and
    the per-rank losses of every iteration."""
    model = ToyRMoEClassifier(**EP_MODEL).train()
    assert not expert_shards(model)  # no process group: every expert here
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    core = [p for _, p in split_parameters(model)['core']]
    set_aux_grad_scale(model, 1 / len(ranks))
    losses = []
    for step in range(ITERS):
        for param in core:
            param.requires_grad_(step >= SWITCH)
        per_rank = [
            model(mode='loss', **rank['batches'][step])['loss_cls']
            for rank in ranks
        ]
        (sum(per_rank) / len(ranks)).backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append([float(loss.detach()) for loss in per_rank])
    return model, optimizer, losses


def test_expert_parallel_run_equals_one_process(two_ranks):
    """Losses of both ranks at every iteration (1e-5) across the switch,
    and the final weights (1e-5); replicated weights equal on both ranks."""
    ranks = records(two_ranks, 'ep')
    model, _, losses = single_process_reference(ranks)
    for step in range(ITERS):
        for rank, record in enumerate(ranks):
            assert record['losses'][step] == pytest.approx(
                losses[step][rank], abs=1e-5), (step, rank)
    shards = {n for n in ranks[0]['params'] if '.residual.' in n}
    assert shards and all(ranks[0]['params'][n].shape[0] == 3 for n in shards)
    for name in ranks[0]['params'].keys() - shards:
        assert torch.equal(ranks[0]['params'][name],
                           ranks[1]['params'][name]), name
    for name, value in model.state_dict().items():
        torch.testing.assert_close(
            ranks[0]['state'][name], value, rtol=1e-5, atol=1e-5, msg=name)


def test_expert_parallel_checkpoint_loads_in_one_process(two_ranks):
    """The runner's checkpoint (rank 0 wrote it) holds full-size residuals
    and optimizer states; one process loads it strictly and reproduces
    both ranks' outputs (1e-6)."""
    ranks = records(two_ranks, 'ep')
    checkpoint = load_checkpoint(two_ranks / 'ep' / f'iter_{ITERS}.pth')
    model = ToyRMoEClassifier(**EP_MODEL).eval()
    model.load_state_dict(checkpoint['state_dict'], strict=True)
    for rank, record in enumerate(ranks):
        with torch.no_grad():
            torch.testing.assert_close(
                model(eval_inputs(rank)),
                record['logits'],
                rtol=1e-6,
                atol=1e-6)
    # Optimizer states: full size, as the one-process reference has them.
    _, optimizer, _ = single_process_reference(ranks)
    want = optimizer.state_dict()['state']
    got = checkpoint['optimizer']['state']
    assert got.keys() == want.keys()
    for index, state in want.items():
        for key, value in state.items():
            torch.testing.assert_close(
                got[index][key], value, rtol=1e-4, atol=1e-6)


def test_expert_parallel_resume_is_bit_exact(two_ranks):
    full, resumed = records(two_ranks, 'ep'), records(two_ranks, 'ep_resume')
    for rank in (0, 1):
        for step in range(SWITCH, ITERS):
            assert resumed[rank]['losses'][step] == \
                full[rank]['losses'][step]
        for name, value in full[rank]['params'].items():
            assert torch.equal(resumed[rank]['params'][name], value), name


def test_zero_equals_ddp_and_resumes_bit_exact(two_ranks):
    """ZeroRedundancyOptimizer through the stage switch (frozen core, DDP
    re-wrap) equals plain DDP (1e-6); its checkpoint (saved on every
    rank's behalf) resumes bit for bit."""
    zero, ddp = records(two_ranks, 'zero'), records(two_ranks, 'ddp')
    resumed = records(two_ranks, 'zero_resume')
    for rank in (0, 1):
        for step in range(ITERS):
            assert zero[rank]['losses'][step] == pytest.approx(
                ddp[rank]['losses'][step], abs=1e-6)
        for name, value in ddp[rank]['params'].items():
            torch.testing.assert_close(
                zero[rank]['params'][name], value, rtol=1e-6, atol=1e-6)
            assert torch.equal(zero[0]['params'][name],
                               zero[1]['params'][name])
            assert torch.equal(resumed[rank]['params'][name],
                               zero[rank]['params'][name])
    # The consolidated state of both ranks' partitions: every parameter
    # that trained before iteration 3 (all but the core) has one.
    checkpoint = load_checkpoint(two_ranks / 'zero' / f'iter_{SWITCH}.pth')
    roles = split_parameters(ToyRMoEClassifier())
    trained = sum(len(roles[r]) for r in ('residual', 'router', 'heads'))
    assert len(checkpoint['optimizer']['state']) == trained


def test_swin_checkpoint_loads_in_one_process_and_tools_test(
        two_ranks, toy_ade20k_options, tmp_path):
    """An expert-parallel RMoE Swin UperNet checkpoint: full-size residuals,
    a strict load in one process that reproduces both ranks' backbone
    outputs after they loaded it back (1e-5), and ``tools/test.py``
    evaluates it."""
    path = two_ranks / 'swin' / 'iter_2.pth'
    state = load_checkpoint(path)['state_dict']
    residuals = [k for k in state if '.ffn.residual.' in k]
    assert residuals and all(state[k].shape[0] == 8 for k in residuals)
    cfg = Config.fromfile(SWIN_CONFIG)
    cfg.merge_from_dict({'model.backbone.moe_cfg.expert_parallel': True})
    model = build_model(cfg).eval()
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        outs = model.backbone(
            model.data_preprocessor(dict(inputs=[swin_image()[0] *
                                                 255]))['inputs'])
    for rank in (0, 1):
        got = torch.load(two_ranks / 'swin' / f'backbone_rank{rank}.pt')
        for level, (a, b) in enumerate(zip(got, outs)):
            torch.testing.assert_close(
                a, b, rtol=1e-5, atol=1e-5, msg=f'level {level}')
    metrics = load_tool('tools/test.py').main([
        str(SWIN_CONFIG),
        str(path), '--work-dir',
        str(tmp_path), '--cfg-options', *toy_ade20k_options, *SWIN_EP,
        f'experiment_name=test_{uuid.uuid4().hex[:8]}'
    ])
    assert 'mIoU' in metrics, metrics
