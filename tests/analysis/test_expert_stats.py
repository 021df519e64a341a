"""The numbers behind the expert pictures (rmoe_mm.analysis.expert_stats),
against hand-computed values."""
import math

import pytest
import torch
from torch import nn

# yapf: disable
from rmoe_mm.analysis.expert_stats import (contingency, entropy_bits,
                                           ground_truth_map,
                                           instance_class_map,
                                           mutual_information, patch_labels,
                                           pca, specialisation,
                                           weight_geometry)
# yapf: enable
from rmoe_mm.analysis.moe_access import residual_weight
from rmoe_mm.analysis.probes import RoutingRecorder, backbone_ffns
from rmoe_mm.moe import RMoEFFN


def test_mutual_information_of_a_small_table_by_hand():
    # p = [[1/2, 0], [1/4, 1/4]]: p(row) = (1/2, 1/2), p(col) = (3/4, 1/4)
    # I = 1/2 log2(4/3) + 1/4 log2(2/3) + 1/4 log2(2) = 0.311278 bits
    joint = torch.tensor([[2., 0.], [1., 1.]])
    expected = 0.5 * math.log2(4 / 3) + 0.25 * math.log2(2 / 3) + 0.25
    assert mutual_information(joint) == pytest.approx(expected, abs=1e-12)
    assert mutual_information(joint) == pytest.approx(0.3112781, abs=1e-7)
    # I = H(row) + H(col) - H(row, col)
    by_entropies = (
        entropy_bits(torch.tensor([.5, .5])) +
        entropy_bits(torch.tensor([.75, .25])) -
        entropy_bits(torch.tensor([.5, .25, .25])))
    assert mutual_information(joint) == pytest.approx(by_entropies, abs=1e-12)


def test_mutual_information_zero_for_independent_ids_and_full_when_equal():
    independent = torch.outer(
        torch.tensor([1., 2., 5.]), torch.tensor([3., 1., 1., 4.]))
    assert mutual_information(independent) == pytest.approx(0, abs=1e-12)
    assert mutual_information(torch.zeros(3, 3)) == 0
    identity = torch.eye(4) * 10  # expert id = class: I = H = 2 bits
    assert mutual_information(identity) == pytest.approx(2, abs=1e-12)
    summary = specialisation(identity)
    assert summary['normalised'] == pytest.approx(1)
    assert summary['num_tokens'] == 40
    # (E'-1)(K'-1) / (2 N ln 2) with E' = K' = 4, N = 40
    assert summary['plug_in_bias'] == pytest.approx(9 / (80 * math.log(2)))


def test_contingency_counts_pairs_and_skips_unlabelled_patches():
    experts = torch.tensor([[0, 1], [1, 2]])
    classes = torch.tensor([[3, -1], [0, 0]])
    table = contingency(experts, classes, 3, 4)
    expected = torch.zeros(3, 4, dtype=torch.long)
    expected[0, 3] = expected[1, 0] = expected[2, 0] = 1
    assert torch.equal(table, expected)
    contingency(experts, classes, 3, 4, out=table)
    assert torch.equal(table, 2 * expected)


def test_patch_labels_take_the_majority_of_each_footprint():
    labels = torch.full((4, 6), -1)
    labels[:2, :3] = 1  # token (0, 0): all class 1
    labels[0, 3:] = 2  # token (0, 1): 3 x class 2, 3 x class 0
    labels[1, 3:] = 0
    labels[2:, :3] = 255  # token (1, 0): ignored only -> -1
    labels[2:, 3:] = 4  # token (1, 1): class 4
    labels[3, 5] = 5
    grid = patch_labels(labels, (2, 2), num_classes=6)
    assert grid.tolist() == [[1, 0], [-1, 4]]  # tie 2 vs 0 -> lower id


def test_instance_class_map_puts_small_instances_on_top():
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0] = True  # a big instance of class 2 everywhere
    masks[1, 1:3, 1:3] = True  # a small one of class 0 inside it
    class_map = instance_class_map(masks, torch.tensor([2, 0]), (4, 4), 6)
    assert class_map[0, 0] == 2 and class_map[1, 1] == 0
    empty = instance_class_map(torch.zeros(0, 4, 4), torch.zeros(0), (4, 4), 6)
    assert (empty == 6).all()


def test_pca_of_points_on_a_line():
    direction = torch.tensor([3., 4., 0.], dtype=torch.float64) / 5
    points = torch.tensor([-2., -1., 0., 1., 2.],
                          dtype=torch.float64)[:, None] * direction + 7
    mean, components, explained = pca(points, 2)
    torch.testing.assert_close(mean, torch.full((3, ), 7.).double())
    assert abs(float(components[0] @ direction)) == pytest.approx(1, abs=1e-10)
    assert explained.tolist() == pytest.approx([1., 0.], abs=1e-10)


def test_weight_geometry_of_experts_around_their_core():
    torch.manual_seed(0)
    ffn = RMoEFFN(4, 8, num_experts=3, residual_std=0.)
    core = torch.cat([
        ffn.layers[0][0].weight.flatten(), ffn.layers[0][0].bias,
        ffn.layers[1].weight.flatten(), ffn.layers[1].bias
    ]).detach()
    # expert e = core + (e - 1) * v: three points on a line through the core
    v1 = torch.randn(8, 4)
    with torch.no_grad():
        for e in range(3):
            residual_weight(ffn, 'fc1')[e] = (e - 1) * v1
    geometry = weight_geometry(ffn)
    norm = float(core.norm())
    assert geometry['core_norm'] == pytest.approx(norm, rel=1e-6)
    expected_ratio = [float(v1.norm()) / norm, 0., float(v1.norm()) / norm]
    assert geometry['residual_ratio'] == pytest.approx(
        expected_ratio, abs=1e-7)
    # the core is the middle expert: the centre of the three points
    assert geometry['core_xy'] == pytest.approx([0., 0.], abs=1e-7)
    assert geometry['explained'][0] == pytest.approx(1., abs=1e-9)
    xs = sorted(abs(xy[0]) for xy in geometry['expert_xy'])
    assert xs == pytest.approx([0., expected_ratio[0], expected_ratio[0]],
                               abs=1e-7)


class TokenBlock(nn.Module):
    """A block seeing ``[B, L, C]`` tokens of an ``hw_shape`` grid, with an
    optional leading class token (as CvT's last stage)."""

    def __init__(self, ffn):
        super().__init__()
        self.ffn = ffn

    def forward(self, x, hw_shape):
        return self.ffn(x)


def test_routing_recorder_maps_tokens_to_the_grid_without_class_token():
    torch.manual_seed(0)
    ffn = RMoEFFN(4, 8, num_experts=4).eval()
    block = TokenBlock(ffn)
    backbone = nn.Module()
    backbone.stages = nn.ModuleList([nn.Module()])
    backbone.stages[0].blocks = nn.ModuleList([block])
    sites = backbone_ffns(backbone)
    for extra in (0, 1):
        x = torch.randn(2, extra + 6, 4)
        with RoutingRecorder(sites) as recorder:
            block(x, (2, 3))
            maps = recorder.expert_maps()
        top1 = ffn.router.logits(x.reshape(-1, 4)).argmax(1).view(2, -1)
        assert maps[sites[0].name].shape == (2, 2, 3)
        assert torch.equal(maps[sites[0].name].flatten(1), top1[:, extra:])


def test_ground_truth_map_seg_resized_padded_and_ignored():
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    sample = SegDataSample(metainfo=dict(img_shape=(4, 4), ori_shape=(2, 2)))
    sample.gt_sem_seg = PixelData(data=torch.tensor([[[0, 255], [3, 9]]]))
    truth = ground_truth_map(sample, 'mmseg', (5, 6), num_classes=5)
    expected = torch.full((5, 6), -1)
    expected[:2, :2], expected[2:4, :2], expected[2:4, 2:4] = 0, 3, -1
    assert torch.equal(truth, expected)  # 9 >= num_classes: unlabelled


def test_ground_truth_map_det_instances_over_background():
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    sample = DetDataSample(metainfo=dict(img_shape=(8, 8), ori_shape=(4, 4)))
    masks = torch.zeros(1, 4, 4, dtype=torch.uint8)
    masks[0, :2, :2] = 1
    sample.gt_instances = InstanceData(
        labels=torch.tensor([2]), masks=BitmapMasks(masks.numpy(), 4, 4))
    truth = ground_truth_map(sample, 'mmdet', (8, 8), num_classes=3)
    assert (truth[:4, :4] == 2).all()  # the instance, at the resized scale
    assert (truth[4:, :] == 3).all() and (truth[:, 4:] == 3).all()
