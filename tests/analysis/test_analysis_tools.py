"""tools/analysis/select_moe_layers.py and expert_analysis.py, once each per
kind of model, on toy checkpoints made here (random weights: the tools must
run and write every output; the numbers are checked in the math tests).
"""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

import rmoe_mm  # noqa: F401
from rmoe_mm.analysis.runtime import load_analysis_config
from rmoe_mm.testing import REPO_ROOT, build_model

pytestmark = pytest.mark.slow  # builds toy segmentors / detectors


def load_tool(name):
    path = REPO_ROOT / 'tools' / 'analysis' / f'{name}.py'
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def options_for(data_root, coco=False):
    options = [
        f'{split}_dataloader.dataset.data_root={data_root}'
        for split in ('train', 'val', 'test')
    ]
    if coco:
        ann = Path(data_root) / 'annotations' / 'instances_val2017.json'
        options.append(f'val_evaluator.ann_file={ann}')
    return options


def make_checkpoint(config, options, path):
    """A whole-model checkpoint of ``config`` as tools/train.py saves it."""
    cfg = load_analysis_config(
        str(REPO_ROOT / config), dict(o.split('=', 1) for o in options))
    torch.manual_seed(0)
    model = build_model(cfg)
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return str(path)


def test_select_moe_layers_on_a_dense_toy_checkpoint(tmp_path, toy_ade20k_root,
                                                     capsys):
    config = 'configs/toy/rmoe_swin_upernet_toy_ade20k.py'
    options = options_for(toy_ade20k_root)
    dense = make_checkpoint('configs/toy/swin_upernet_toy_ade20k.py', options,
                            tmp_path / 'dense.pth')
    out = tmp_path / 'select' / 'scores.json'
    result = load_tool('select_moe_layers').main([
        str(REPO_ROOT / config), dense, '--batches', '2', '--batch-size', '2',
        '--num-layers', '3', '--num-experts', '4', '--device', 'cpu', '--out',
        str(out), '--cfg-options', *options
    ])
    saved = json.loads(out.read_text())
    assert saved['moe_blocks'] == result['moe_blocks']
    assert sum(map(len, saved['moe_blocks'])) == 3
    assert saved['depths'] == [2, 2, 2, 2]
    assert len(saved['layers']) == 8
    assert all(not layer['is_moe'] and layer['num_groups'] == 4
               for layer in saved['layers'])
    assert out.with_suffix('.png').stat().st_size > 0
    printed = capsys.readouterr().out
    assert f'moe_blocks={saved["moe_blocks"]}' in printed
    assert 'rank' in printed and 's3.b1' in printed


@pytest.mark.parametrize('kind', ['seg_cvt', 'det_swin'])
def test_expert_analysis_writes_every_picture_and_the_summary(
        kind, tmp_path, request):
    if kind == 'seg_cvt':  # CvT: the class token of its last stage
        config = 'configs/toy/rmoe_cvt_upernet_toy_ade20k.py'
        options = options_for(request.getfixturevalue('toy_ade20k_root'))
    else:
        config = 'configs/toy/rmoe_swin_mask_rcnn_toy_coco.py'
        options = options_for(
            request.getfixturevalue('toy_coco_root'), coco=True)
    checkpoint = make_checkpoint(config, options, tmp_path / 'rmoe.pth')
    out = tmp_path / 'analysis'
    summary = load_tool('expert_analysis').main([
        str(REPO_ROOT / config), checkpoint, '--images', '0', '2', '--out',
        str(out), '--device', 'cpu', '--cfg-options', *options
    ])
    for name in ('expert_maps', 'expert_load', 'specialisation',
                 'weight_geometry'):
        assert (out / f'{name}.png').stat().st_size > 0, name
    saved = json.loads((out / 'summary.json').read_text())
    assert saved['num_images'] == 4
    assert [d['index'] for d in saved['drawn_images']] == [0, 2]
    assert len(saved['layers']) == 2  # the default placement
    for layer in saved['layers'].values():
        counts = torch.tensor(layer['expert_class_counts'])
        assert counts.shape == (layer['num_experts'], len(saved['classes']))
        # every patch with a class was counted once
        assert 0 < counts.sum() <= sum(layer['tokens_per_expert'])
        assert layer['specialisation']['mutual_information'] >= 0
        assert len(layer['weight_geometry']['residual_ratio']) == \
            layer['num_experts']
    if kind == 'det_swin':
        assert saved['classes'][-1] == 'background'
    assert summary['most_specialised_layer'] in saved['layers']


def test_checkpoints_that_do_not_fit_are_refused_with_the_reason(
        tmp_path, toy_ade20k_root):
    from rmoe_mm.analysis.runtime import load_model
    options = options_for(toy_ade20k_root)
    dense_cfg = 'configs/toy/swin_upernet_toy_ade20k.py'
    rmoe_cfg = 'configs/toy/rmoe_swin_upernet_toy_ade20k.py'
    dense = make_checkpoint(dense_cfg, options, tmp_path / 'dense.pth')
    rmoe = make_checkpoint(rmoe_cfg, options, tmp_path / 'rmoe.pth')

    def cfg(config):
        return load_analysis_config(str(REPO_ROOT / config))

    with pytest.raises(ValueError, match='dense checkpoint'):
        load_model(cfg(rmoe_cfg), dense, dense_twin_for_dense_checkpoint=False)
    with pytest.raises(ValueError, match='RMoE checkpoint but the config'):
        load_model(cfg(dense_cfg), rmoe)
    state = torch.load(rmoe, weights_only=True)
    del state['state_dict']['decode_head.conv_seg.weight']
    torch.save(state, tmp_path / 'partial.pth')
    with pytest.raises(ValueError, match='decode_head.conv_seg.weight'):
        load_model(cfg(rmoe_cfg), str(tmp_path / 'partial.pth'))
    # an RMoE checkpoint of other MoE blocks: main's fit check names them
    other = cfg(rmoe_cfg)
    other.model.backbone.moe_blocks = [[], [], [0], []]
    with pytest.raises(ValueError, match='moe_blocks|MoE'):
        load_model(other, rmoe)
    # a dense checkpoint with an RMoE config: the dense twin is scored
    model = load_model(cfg(rmoe_cfg), dense)
    assert not any(True for _ in rmoe_mm.moe.rmoe_layers(model))
    # residual keys of the older layout (residual.fc1_weight) are renamed
    state = torch.load(rmoe, weights_only=True)
    state['state_dict'] = {
        key.replace('residual.fc1.weight', 'residual.fc1_weight'): value
        for key, value in state['state_dict'].items()
    }
    assert any('fc1_weight' in key for key in state['state_dict'])
    torch.save(state, tmp_path / 'legacy.pth')
    model = load_model(cfg(rmoe_cfg), str(tmp_path / 'legacy.pth'))
    expected = torch.load(rmoe, weights_only=True)['state_dict']
    for key, value in model.state_dict().items():
        if key in expected:
            torch.testing.assert_close(value, expected[key])


def test_fixed_loss_batches_are_the_same_in_every_invocation(toy_ade20k_root):
    tool = load_tool('layer_selection_experiment')
    cfg = load_analysis_config(
        str(REPO_ROOT / 'configs/toy/rmoe_swin_upernet_toy_ade20k.py'),
        dict(o.split('=', 1) for o in options_for(toy_ade20k_root)))
    first = tool.fixed_batches(cfg, 2)
    torch.manual_seed(99)  # whatever ran before
    again = tool.fixed_batches(cfg, 2)
    for a, b in zip(first, again):
        for x, y in zip(a['inputs'], b['inputs']):
            assert torch.equal(x, y)
        for x, y in zip(a['data_samples'], b['data_samples']):
            assert torch.equal(x.gt_sem_seg.data, y.gt_sem_seg.data)
