# 2-process toy RMoE-I run for tests/hooks/test_stage_hook_ddp.py: the core is
# frozen for iterations 0-2 and trains from iteration 3. The toy model, data
# and dump hook are in rmoe_mm.testing.toy_rmoe (scope rmoe_mm_testing).
custom_imports = dict(
    imports=['rmoe_mm', 'rmoe_mm.testing.toy_rmoe'],
    allow_failed_imports=False)
default_scope = 'mmengine'
switch = 3
model = dict(type='rmoe_mm_testing.ToyRMoEClassifier')
train_dataloader = dict(
    dataset=dict(type='rmoe_mm_testing.ToyDataset'),
    sampler=dict(type='InfiniteSampler', shuffle=True),
    batch_size=8,
    num_workers=0,
    collate_fn=dict(type='default_collate'))
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=0.05, weight_decay=0.1))
train_cfg = dict(by_epoch=False, max_iters=6)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=1),
    checkpoint=dict(type='CheckpointHook', interval=1000, by_epoch=False))
custom_hooks = [
    dict(
        type='RMoEStageHook',
        stages=[
            dict(name='intermediate', begin=0, frozen=['core']),
            dict(name='finetune', begin=switch)
        ]),
    dict(type='MoEStatsHook'),
    dict(type='IterationSeedHook'),
    dict(type='rmoe_mm_testing.RankParamsDumpHook', switch=switch),
]
randomness = dict(seed=0)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
