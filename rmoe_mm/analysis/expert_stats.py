"""What the experts of a trained RMoE model do: the numbers behind the
pictures of ``tools/analysis/expert_analysis.py``.

- specialisation: mutual information between a patch's top-1 expert and its
  ground-truth class, from their contingency table;
- weight geometry: PCA of each expert's weights (core + residual, flattened)
  and the size of each residual relative to the core;
- the ground-truth class of every patch token.
"""
import math
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .moe_access import FCS, core_linear, expert_weights


def entropy_bits(probs: Tensor) -> float:
    """Shannon entropy (bits) of a probability vector (zeros allowed)."""
    probs = probs.double().flatten()
    nonzero = probs[probs > 0]
    return float(-(nonzero * nonzero.log2()).sum())


def mutual_information(joint: Tensor) -> float:
    """Mutual information (bits) of the two variables of a contingency table.

    ``joint[i, j]`` counts (or probabilities) of the pairs ``(i, j)``;
    ``I = sum p(i, j) log2(p(i, j) / (p(i) p(j)))`` of its normalised
    version. 0 for independent variables, ``H(i)`` when ``j`` determines
    ``i``. An all-zero table gives 0.
    """
    joint = joint.double()
    total = joint.sum()
    if total <= 0:
        return 0.
    p = joint / total
    outer = p.sum(1, keepdim=True) * p.sum(0, keepdim=True)
    mask = p > 0
    return float((p[mask] * (p[mask] / outer[mask]).log2()).sum())


def specialisation(joint: Tensor) -> Dict[str, float]:
    """Mutual information of an expert x class table and its context.

    Returns:
        dict: ``mutual_information`` (bits), ``expert_entropy`` and
        ``class_entropy`` (bits), ``normalised`` (MI / class entropy: the
        share of the class uncertainty that the expert id removes),
        ``plug_in_bias`` (bits: the plug-in estimate's expected excess for
        independent variables, ``(E' - 1)(K' - 1) / (2 N ln 2)`` over the
        E' experts and K' classes that occur), and ``num_tokens``.
    """
    joint = joint.double()
    total = float(joint.sum())
    mi = mutual_information(joint)
    class_entropy = entropy_bits(joint.sum(0) / max(total, 1.))
    rows = int((joint.sum(1) > 0).sum())
    cols = int((joint.sum(0) > 0).sum())
    bias = (rows - 1) * (cols - 1) / (2 * total * math.log(2)) \
        if total > 0 and rows and cols else 0.
    return dict(
        mutual_information=mi,
        expert_entropy=entropy_bits(joint.sum(1) / max(total, 1.)),
        class_entropy=class_entropy,
        normalised=mi / class_entropy if class_entropy > 0 else 0.,
        plug_in_bias=bias,
        num_tokens=int(total))


def pca(points: Tensor,
        num_components: int = 2) -> Tuple[Tensor, Tensor, Tensor]:
    """Principal components of ``points [n, D]``.

    Returns:
        ``(mean [D], components [k, D], explained [k])``: the centre, unit
        principal axes (rows), and each axis's share of the total variance.
        Fewer than ``num_components`` axes exist for ``n <= k``; missing ones
        are zero with share 0.
    """
    points = points.double()
    mean = points.mean(0)
    centred = points - mean
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
    variance = singular.pow(2)
    total = variance.sum()
    k = min(num_components, vh.shape[0])
    components = torch.zeros(
        num_components,
        points.shape[1],
        dtype=points.dtype,
        device=points.device)
    explained = torch.zeros(num_components, dtype=points.dtype)
    components[:k] = vh[:k]
    if total > 0:
        explained[:k] = (variance[:k] / total).cpu()
    return mean, components, explained


def flat_expert_weights(ffn: nn.Module) -> Tuple[Tensor, Tensor]:
    """Every expert's FFN weights flattened ``[E, D]`` (fc1 W, b, fc2 W, b),
    and the core's ``[D]`` in the same order."""
    experts, core = [], []
    for fc in FCS:
        weight, bias = expert_weights(ffn, fc)
        linear = core_linear(ffn, fc)
        experts += [weight.flatten(1), bias]
        core += [linear.weight.flatten(), linear.bias]
    return torch.cat(experts, 1).detach(), torch.cat(core).detach()


@torch.no_grad()
def weight_geometry(ffn: nn.Module) -> Dict[str, object]:
    """Where an RMoE FFN's experts lie relative to its core.

    PCA of the E expert weight vectors (core + residual_i, flattened); the
    core is projected onto the same axes. Coordinates are in units of
    ``||core||`` so that layers of different sizes compare.

    Returns:
        dict: ``expert_xy [E, 2]`` and ``core_xy [2]`` (lists),
        ``explained`` (variance share of the two axes), ``residual_ratio``
        (``||residual_i|| / ||core||`` per expert), ``core_norm``.
    """
    experts, core = flat_expert_weights(ffn)
    experts, core = experts.double(), core.double()
    mean, components, explained = pca(experts, 2)
    core_norm = float(core.norm())
    scale = core_norm if core_norm > 0 else 1.
    expert_xy = (experts - mean) @ components.t() / scale
    core_xy = (core - mean) @ components.t() / scale
    ratio = (experts - core).norm(dim=1) / scale
    return dict(
        expert_xy=expert_xy.cpu().tolist(),
        core_xy=core_xy.cpu().tolist(),
        explained=explained.tolist(),
        residual_ratio=ratio.cpu().tolist(),
        core_norm=core_norm)


# ---------------------------------------------------------- patch labels


def patch_labels(label_map: Tensor,
                 grid: Tuple[int, int],
                 num_classes: int,
                 ignore_index: int = 255) -> Tensor:
    """The majority class of each token's footprint ``[h, w]`` (-1: none).

    ``label_map [H, W]`` covers the input the backbone saw; token ``(i, j)``
    of an ``h x w`` grid covers rows ``[i H / h, (i + 1) H / h)`` and the
    columns alike. Pixels at ``ignore_index`` (or outside ``[0,
    num_classes)``) do not vote; a token without votes gets -1. Ties go to
    the lower class id.
    """
    height, width = label_map.shape
    rows, cols = grid
    labels = label_map.long()
    token_row = torch.arange(height, device=labels.device) * rows // height
    token_col = torch.arange(width, device=labels.device) * cols // width
    token = token_row[:, None] * cols + token_col[None, :]
    valid = (labels >= 0) & (labels < num_classes) & (labels != ignore_index)
    votes = torch.bincount(
        token[valid] * num_classes + labels[valid],
        minlength=rows * cols * num_classes).view(rows * cols, num_classes)
    majority = votes.argmax(1)
    majority[votes.sum(1) == 0] = -1
    return majority.view(rows, cols)


def instance_class_map(masks: Tensor, labels: Tensor, shape: Tuple[int, int],
                       background: int) -> Tensor:
    """A class map ``[H, W]`` from instance masks: each pixel the class of
    the instance covering it (smaller instances on top of larger ones),
    ``background`` elsewhere.

    Args:
        masks (Tensor): ``[n, H, W]`` bool.
        labels (Tensor): ``[n]`` class of each instance.
        shape: ``(H, W)`` of the map (used when there are no instances).
        background (int): The class id of uncovered pixels.
    """
    class_map = torch.full(shape, background, dtype=torch.long)
    if masks.numel():
        masks = masks.bool().cpu()
        order = torch.argsort(masks.flatten(1).sum(1), descending=True)
        for index in order.tolist():
            class_map[masks[index]] = int(labels[index])
    return class_map


def resize_labels(label_map: Tensor, size: Tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize of a label map ``[H, W]`` to ``size``."""
    if tuple(label_map.shape) == tuple(size):
        return label_map
    resized = F.interpolate(
        label_map[None, None].float(), size=tuple(size), mode='nearest')
    return resized[0, 0].to(label_map.dtype)


def pad_labels(label_map: Tensor, size: Tuple[int, int], fill: int) -> Tensor:
    """``label_map`` at the top-left of a ``size`` map filled with ``fill``
    (the padding data preprocessors add at the bottom and right)."""
    out = torch.full(size, fill, dtype=label_map.dtype)
    height, width = label_map.shape
    out[:min(height, size[0]), :min(width, size[1])] = \
        label_map[:size[0], :size[1]]
    return out


def contingency(expert_ids: Tensor,
                class_ids: Tensor,
                num_experts: int,
                num_classes: int,
                out: Optional[Tensor] = None) -> Tensor:
    """Counts ``[E, K]`` of (expert, class) pairs; pairs with a class < 0
    are left out. Added to ``out`` when given."""
    expert_ids, class_ids = expert_ids.flatten(), class_ids.flatten()
    valid = class_ids >= 0
    counts = torch.bincount(
        expert_ids[valid].cpu() * num_classes + class_ids[valid].cpu(),
        minlength=num_experts * num_classes).view(num_experts, num_classes)
    return counts if out is None else out.add_(counts)


def ground_truth_map(sample,
                     library: str,
                     input_hw: Tuple[int, int],
                     num_classes: int,
                     ignore_index: int = 255) -> Tensor:
    """The class of every input pixel ``[H, W]`` (-1: no label), aligned with
    the input the backbone saw (image at the top left, padding unlabelled).

    - mmseg: the sample's ``gt_sem_seg``; ``ignore_index`` and ids outside
      ``[0, num_classes)`` become -1.
    - mmdet: the class of the instance mask covering the pixel (boxes when
      the sample has no masks), ``num_classes`` (background) elsewhere.

    Annotations at another size than ``img_shape`` (mmseg's and mmdet's test
    pipelines load them after the resize, at the original size) are resized
    to it, nearest neighbour; boxes are taken in ``ori_shape`` coordinates.
    """
    img_hw = tuple(sample.metainfo['img_shape'][:2])
    if library == 'mmseg':
        labels = sample.gt_sem_seg.data[0].long().cpu()
        labels[(labels == ignore_index) | (labels < 0) |
               (labels >= num_classes)] = -1
    elif library == 'mmdet':
        instances = sample.gt_instances
        classes = instances.labels.cpu()
        masks = getattr(instances, 'masks', None)
        if masks is not None:
            if hasattr(masks, 'to_ndarray'):  # BitmapMasks / PolygonMasks
                array = torch.from_numpy(masks.to_ndarray())
            else:
                array = torch.as_tensor(masks)
            shape = tuple(array.shape[-2:]) if array.dim() == 3 else tuple(
                sample.metainfo['ori_shape'][:2])
            labels = instance_class_map(array, classes, shape, num_classes)
        else:
            shape = tuple(sample.metainfo['ori_shape'][:2])
            boxes = torch.zeros((len(classes), ) + shape, dtype=torch.bool)
            bboxes = instances.bboxes
            bboxes = getattr(bboxes, 'tensor', bboxes).cpu()
            for index, (x1, y1, x2, y2) in enumerate(bboxes.round().long()):
                boxes[index, y1:y2, x1:x2] = True
            labels = instance_class_map(boxes, classes, shape, num_classes)
    else:
        raise ValueError(f"library must be 'mmseg' or 'mmdet', got "
                         f'{library!r}')
    labels = resize_labels(labels, img_hw)
    return pad_labels(labels, tuple(input_hw), -1)
