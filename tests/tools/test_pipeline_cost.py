"""tools/analysis/pipeline_cost.py: the FLOP rule, schedules and the table.

The rule (backward = forward once more per matmul operand that needs a
gradient; an RMoE FFN priced as one layer) is checked against hand counts on
tiny models and against torch's flop counter run through the backward pass.
"""
import importlib.util
import json

import pytest
import torch
from mmcv.cnn.bricks.transformer import FFN
from mmengine.config import Config
from torch import nn

from rmoe_mm.moe import RMoEFFN
from rmoe_mm.testing import REPO_ROOT

PIPELINES = REPO_ROOT / 'configs' / 'pipelines'


@pytest.fixture(scope='module')
def tool():
    path = REPO_ROOT / 'tools' / 'analysis' / 'pipeline_cost.py'
    spec = importlib.util.spec_from_file_location('pipeline_cost', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def three_layers(trained):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2))
    for layer, train in zip(model, trained):
        layer.requires_grad_(train)
    return model


@pytest.mark.parametrize(
    'trained,backward',
    [
        # frozen, trained, frozen: layer 2 needs only its weight gradient (its
        # input comes from frozen layers), layer 3 only its input gradient
        ((False, True, False), 2 * 3 * (8 * 8 + 8 * 2)),
        # all trained: the first layer's input is the data (weight grad only)
        ((True, True, True), 2 * 3 * (4 * 8 + 2 * 8 * 8 + 2 * 8 * 2)),
        # nothing before the last layer trains: only its weight gradient
        ((False, False, True), 2 * 3 * 8 * 2),
    ])
def test_flop_rule_equals_a_hand_count(tool, trained, backward):
    model = three_layers(trained)
    x = torch.randn(3, 4)
    flops = tool.count_training_flops(
        model, lambda: model(x).sum(), check_backward=True)
    forward = 2 * 3 * (4 * 8 + 8 * 8 + 8 * 2)  # 2 FLOPs per multiply-add
    assert flops['forward'] == forward
    assert flops['backward_rule'] == backward
    assert flops['counted'] == forward + backward  # what autograd runs


@pytest.mark.parametrize(
    'frozen,factor',
    [
        ('core', 1),  # residuals train: the expert weight gradient only
        ('residual', 1),  # the core trains: the same gradient, summed
        (None, 1),
    ])
def test_rmoe_ffn_is_priced_as_one_layer(tool, frozen, factor):
    """Tokens x (router + top-1 expert fc1 + fc2): 2 x (C E + 2 C H) FLOPs
    per token forward; backward 1x (input from data: no input gradient)."""
    torch.manual_seed(0)
    tokens, dims, hidden, experts = 10, 8, 16, 4
    ffn = RMoEFFN.from_dense(FFN(dims, hidden), num_experts=experts)
    for name, param in ffn.named_parameters():
        if frozen == 'core' and not name.startswith(('residual', 'router')):
            param.requires_grad_(False)
        if frozen == 'residual' and name.startswith('residual'):
            param.requires_grad_(False)
    x = torch.randn(1, tokens, dims)
    flops = tool.count_training_flops(ffn, lambda: ffn(x).sum())
    forward = 2 * tokens * (dims * experts + 2 * dims * hidden)
    assert flops['forward'] == forward
    assert flops['backward_rule'] == factor * forward


def test_low_rank_rmoe_ffn_adds_its_rank_terms(tool):
    """Low-rank residual: the core's fc1 and fc2 plus (x B^T) A^T per fc:
    2 r (in + out) FLOPs per token each."""
    torch.manual_seed(0)
    ffn = RMoEFFN.from_dense(FFN(8, 16), num_experts=4, residual_rank=2)
    x = torch.randn(1, 10, 8)
    flops = tool.count_training_flops(ffn, lambda: ffn(x).sum())
    assert flops['forward'] == 2 * 10 * (8 * 4 + 2 * 8 * 16 + 2 * 2 * (8 + 16))


def test_rmoe_ffn_behind_a_trained_layer_also_pays_its_input_gradient(tool):
    torch.manual_seed(0)
    ffn = RMoEFFN.from_dense(FFN(8, 16), num_experts=4)
    embed = nn.Linear(8, 8)
    model = nn.Sequential(embed, ffn)
    x = torch.randn(1, 10, 8)
    flops = tool.count_training_flops(model, lambda: model(x).sum())
    unit = 2 * 10 * (8 * 4 + 2 * 8 * 16)
    assert flops['backward_rule'] == 2 * unit + 2 * 10 * 8 * 8


def test_stage_modes_and_images_follow_the_stage_hook(tool):
    cfg = Config.fromfile(PIPELINES /
                          'swin_t_mask_rcnn_coco_rmoe_i_downstream.py')
    modes = tool.stage_modes(cfg)
    assert [(m[0], m[1]) for m in modes] == [('intermediate', ('core', )),
                                             ('finetune', ())]
    assert [m[2] for m in modes] == pytest.approx([1 / 13, 12 / 13])
    assert tool.stage_images(cfg, dict(dataset_size=100)) == 1300
    with pytest.raises(ValueError, match='dataset_size'):
        tool.stage_images(cfg, {})
    ade = Config.fromfile(PIPELINES / 'swin_t_upernet_ade20k_dense.py')
    assert tool.stage_modes(ade) == [('train', (), 1.)]
    assert tool.stage_images(ade, dict(world_size=8)) == 160000 * 2 * 8
    assert tool.train_input_size(ade) == (512, 512)


def test_toy_table_is_produced(tool, tmp_path, capsys):
    out = tmp_path / 'cost.json'
    result = tool.main([
        str(PIPELINES / 'specs' / 'swin_upernet_toy_ade20k.py'), '--pipelines',
        'dense', 'rmoe_i', '--repeats', '1', '--warmup', '0', '--json',
        str(out)
    ])
    printed = capsys.readouterr().out
    assert 'time vs dense' in printed and 'FLOPs vs dense' in printed
    saved = json.loads(out.read_text())
    assert set(saved['pipelines']) == {'dense', 'rmoe_i'}
    assert saved['pipelines']['rmoe_i']['stages'] == [
        'dense_pretrain', 'rmoe_intermediate', 'rmoe_i'
    ]
    assert saved['flops_vs_dense']['dense'] == 1.
    # RMoE-I adds its intermediate stage; top-1 experts cost dense FLOPs
    assert 1. < saved['flops_vs_dense']['rmoe_i'] < 1.2
    # Time is measured (no timing race here): the ratio is the sum over the
    # chain's stages of images x measured seconds per image, over dense's.
    seconds = {
        name:
        sum(stage['seconds']
            for stage in saved['pipelines'][name]['per_stage'].values())
        for name in ('dense', 'rmoe_i')
    }
    assert all(v > 0 for v in seconds.values())
    assert saved['time_vs_dense']['rmoe_i'] == pytest.approx(
        seconds['rmoe_i'] / seconds['dense'])
    modes = saved['stages']['rmoe_intermediate']['modes']
    assert modes[0]['frozen'] == ['core'] and modes[0]['seconds_per_image']
    assert result['stages']['dense']['images'] == 300 * 4
