"""The analysis pictures (matplotlib, Agg backend: files only, no display).

Every function takes plain numbers (lists, numpy arrays) and a path, and
writes one PNG; the tools compute the numbers.
"""
import io
from typing import Dict, List, Optional, Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from PIL import Image  # noqa: E402

DPI = 90


def expert_colours(num_experts: int) -> np.ndarray:
    """``[E, 3]`` RGB in [0, 1]: one distinct colour per expert."""
    name = 'tab10' if num_experts <= 10 else 'tab20'
    if num_experts <= 20:
        cmap = plt.get_cmap(name)
        return np.array([cmap(i)[:3] for i in range(num_experts)])
    cmap = plt.get_cmap('hsv')
    return np.array([cmap(i / num_experts)[:3] for i in range(num_experts)])


def _save(fig, path: str) -> None:
    """Save as an 8-bit palette PNG: these plots have few colours, and a
    palette keeps files small enough to commit."""
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=DPI, bbox_inches='tight', format='png')
    plt.close(fig)
    buffer.seek(0)
    image = Image.open(buffer).convert('RGB')
    image.quantize(
        colors=256, method=Image.Quantize.MEDIANCUT).save(
            path, optimize=True)


def plot_splitting_scores(labels: Sequence[str],
                          stages: Sequence[int],
                          scores: Sequence[float],
                          path: str,
                          plain: Optional[Sequence[float]] = None,
                          selected: Sequence[str] = (),
                          current_moe: Sequence[str] = (),
                          default: Sequence[str] = (),
                          title: str = '',
                          ylabel: str = 'splitting score') -> None:
    """Bars of the score of every FFN in block order, coloured by stage.

    Selected FFNs have a thick black edge, FFNs that are MoE already a
    hatch, the default placement a triangle on the axis; ``plain`` (the
    noise-biased estimate) is drawn as dots.
    """
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(4., 0.45 * len(labels) + 1.5), 3.))
    palette = plt.get_cmap('Set2')
    values = np.nan_to_num(np.asarray(scores, dtype=float))
    bars = ax.bar(
        x, values, color=[palette(s % 8) for s in stages], width=0.75)
    for bar, label in zip(bars, labels):
        if label in selected:
            bar.set_edgecolor('black')
            bar.set_linewidth(2.)
        if label in current_moe:
            bar.set_hatch('//')
    if plain is not None:
        ax.plot(
            x,
            np.asarray(plain, dtype=float),
            'k.',
            ms=5,
            label='plain estimate (noise-biased)')
    ax.axhline(0, color='grey', lw=0.6)
    marks = [i for i, label in enumerate(labels) if label in default]
    if marks:
        ax.plot(
            marks, [0] * len(marks),
            '^',
            color='dimgrey',
            ms=6,
            clip_on=False,
            zorder=5,
            label='default placement')
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=90, fontsize=7)
    ax.set_ylabel(ylabel)
    handles = [
        Patch(facecolor=palette(s % 8), label=f'stage {s}')
        for s in sorted(set(stages))
    ]
    handles.append(
        Patch(facecolor='white', edgecolor='black', lw=2, label='chosen'))
    if current_moe:
        handles.append(
            Patch(facecolor='white', hatch='//', label='MoE already'))
    handles += ax.get_legend_handles_labels()[0]
    ax.legend(
        handles=handles,
        fontsize=7,
        frameon=False,
        loc='upper left',
        bbox_to_anchor=(1.01, 1.))
    ax.set_title(title, fontsize=9)
    _save(fig, path)


def _blend(image: np.ndarray,
           colours: np.ndarray,
           alpha: float = 0.55) -> np.ndarray:
    return (1 - alpha) * image / 255. + alpha * colours


def _upsample(grid: np.ndarray, shape) -> np.ndarray:
    """Nearest upsampling of a token grid ``[h, w]`` to ``shape``."""
    rows = np.arange(shape[0]) * grid.shape[0] // shape[0]
    cols = np.arange(shape[1]) * grid.shape[1] // shape[1]
    return grid[rows[:, None], cols[None, :]]


def plot_expert_maps(images: List[Dict],
                     layer_labels: Sequence[str],
                     num_experts: Dict[str, int],
                     class_names: Sequence[str],
                     path: str,
                     class_colours: Optional[np.ndarray] = None) -> None:
    """Per image: the image, its ground-truth patch classes and each MoE
    layer's top-1 expert per patch over the image.

    Args:
        images: dicts with ``image [H, W, 3]`` uint8 RGB, ``labels [H, W]``
            (class ids, < 0 unlabelled) and ``experts``: layer label ->
            ``[h, w]`` expert ids; optional ``name``.
    """
    columns = 2 + len(layer_labels)
    fig, axes = plt.subplots(
        len(images),
        columns,
        figsize=(1.5 * columns, 1.5 * len(images) + .5),
        squeeze=False)
    num_classes = len(class_names)
    if class_colours is None:
        class_colours = expert_colours(max(num_classes, 1))
    for row, item in enumerate(images):
        image = item['image']
        labels = item['labels']
        painted = np.zeros(labels.shape + (3, ))
        valid = labels >= 0
        painted[valid] = class_colours[labels[valid] % len(class_colours)]
        axes[row, 0].imshow(image)
        axes[row, 0].set_ylabel(item.get('name', ''), fontsize=6)
        axes[row, 1].imshow(painted)
        for col, layer in enumerate(layer_labels, start=2):
            colours = expert_colours(num_experts[layer])
            grid = _upsample(item['experts'][layer], image.shape[:2])
            axes[row, col].imshow(_blend(image, colours[grid]))
        if row == 0:
            titles = ['image', 'ground truth'] + list(layer_labels)
            for ax, title in zip(axes[0], titles):
                ax.set_title(title, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    most = max(num_experts.values())
    handles = [
        Patch(color=c, label=f'expert {i}')
        for i, c in enumerate(expert_colours(most))
    ]
    fig.legend(
        handles=handles,
        loc='lower center',
        ncol=min(most, 8),
        fontsize=7,
        frameon=False,
        bbox_to_anchor=(0.5, -0.01))
    fig.tight_layout(rect=(0, 0.05, 1, 1), pad=0.3)
    _save(fig, path)


def plot_expert_load(loads: Dict[str, Sequence[int]],
                     dropped: Dict[str, int],
                     path: str,
                     title: str = '') -> None:
    """Tokens per expert per MoE layer, the uniform share as a dashed line,
    and the tokens dropped over capacity (if any) in the panel title."""
    layers = list(loads)
    fig, axes = plt.subplots(
        1, len(layers), figsize=(2.4 * len(layers) + .4, 2.6), squeeze=False)
    for ax, layer in zip(axes[0], layers):
        counts = np.asarray(loads[layer], dtype=float)
        total = counts.sum()
        share = counts / total if total else counts
        ax.bar(
            np.arange(len(counts)), share, color=expert_colours(len(counts)))
        ax.axhline(
            1. / len(counts), color='black', ls='--', lw=1, label='uniform')
        name = layer
        if dropped.get(layer):
            name += f'\n{dropped[layer]} dropped ' \
                f'({100 * dropped[layer] / max(total, 1):.1f}%)'
        ax.set_title(name, fontsize=8)
        ax.set_xticks(np.arange(len(counts)))
        ax.tick_params(labelsize=7)
        ax.set_xlabel('expert', fontsize=8)
    axes[0, 0].set_ylabel('share of tokens', fontsize=8)
    axes[0, 0].legend(fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def plot_specialisation(mutual_information: Dict[str, float],
                        normalised: Dict[str, float],
                        joint: np.ndarray,
                        joint_layer: str,
                        class_names: Sequence[str],
                        path: str,
                        title: str = '') -> None:
    """Mutual information between expert and class per layer (bars), and
    the joint distribution expert x class of ``joint_layer`` (heat map;
    classes without patches left out)."""
    layers = list(mutual_information)
    present = np.nonzero(joint.sum(0) > 0)[0]
    fig, (left, right) = plt.subplots(
        1,
        2,
        figsize=(3. + 0.35 * max(len(present), 4), 3.),
        gridspec_kw=dict(width_ratios=[1, 1.6]))
    bars = left.bar(
        np.arange(len(layers)), [mutual_information[k] for k in layers],
        color='tab:blue')
    for bar, layer in zip(bars, layers):
        left.annotate(
            f'{normalised[layer]:.2f}',
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha='center',
            va='bottom',
            fontsize=7)
    left.set_xticks(np.arange(len(layers)))
    left.set_xticklabels(layers, rotation=90, fontsize=7)
    left.set_ylabel('I(expert; class) [bits]', fontsize=8)
    left.set_title('MI per layer\n(numbers: MI / H(class))', fontsize=8)
    left.tick_params(labelsize=7)
    probs = joint[:, present] / max(joint.sum(), 1)
    image = right.imshow(probs, aspect='auto', cmap='viridis')
    right.set_xticks(np.arange(len(present)))
    right.set_xticklabels([class_names[i] for i in present],
                          rotation=90,
                          fontsize=7)
    right.set_yticks(np.arange(joint.shape[0]))
    right.set_yticklabels([f'expert {i}' for i in range(joint.shape[0])],
                          fontsize=7)
    right.set_title(
        f'p(expert, class)\nmost specialised: {joint_layer}', fontsize=8)
    colorbar = fig.colorbar(image, ax=right, fraction=0.05)
    colorbar.ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def plot_weight_geometry(geometry: Dict[str, Dict],
                         path: str,
                         title: str = '') -> None:
    """Per MoE layer: PCA of the experts' weights with the core marked, and
    ``||residual_i|| / ||core||`` per expert, both in % of ``||core||``."""
    layers = list(geometry)
    fig = plt.figure(figsize=(2.3 * len(layers) + .6, 5.))
    grid = fig.add_gridspec(2, len(layers), height_ratios=[1.3, 1])
    for col, layer in enumerate(layers):
        geo = geometry[layer]
        ax = fig.add_subplot(grid[0, col])
        xy = 100 * np.asarray(geo['expert_xy'])
        core = 100 * np.asarray(geo['core_xy'])
        ax.scatter(
            xy[:, 0], xy[:, 1], c=expert_colours(len(xy)), s=28, zorder=3)
        ax.scatter(*core, marker='*', c='black', s=110, zorder=4)
        ax.annotate(
            'core',
            core,
            fontsize=7,
            xytext=(4, -9),
            textcoords='offset points')
        for i, (px, py) in enumerate(xy):
            ax.annotate(
                str(i), (px, py),
                fontsize=6,
                xytext=(2, 2),
                textcoords='offset points')
        explained = geo['explained']
        ax.set_xlabel(f'PC1 ({100 * explained[0]:.0f}% var.)', fontsize=7)
        ax.set_ylabel(f'PC2 ({100 * explained[1]:.0f}% var.)', fontsize=7)
        ax.set_title(layer, fontsize=8)
        ax.tick_params(labelsize=6)
        ax.set_aspect('equal', adjustable='datalim')
    ax = fig.add_subplot(grid[1, :])
    width = 0.8 / max(len(layers), 1)
    for col, layer in enumerate(layers):
        ratio = 100 * np.asarray(geometry[layer]['residual_ratio'])
        ax.bar(
            np.arange(len(ratio)) + col * width,
            ratio,
            width=width,
            label=layer)
    ax.set_xticks(np.arange(len(ratio)) + 0.4 - width / 2)
    ax.set_xticklabels([str(i) for i in range(len(ratio))])
    ax.set_xlabel('expert', fontsize=8)
    ax.set_ylabel('||residual|| / ||core|| [%]', fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(
        fontsize=7,
        ncol=min(len(layers), 6),
        frameon=False,
        loc='lower center',
        bbox_to_anchor=(0.5, 1.0))
    fig.suptitle(
        f'{title}\nexpert weights (core + residual): PCA, in % of '
        '||core||',
        fontsize=9)
    fig.tight_layout()
    _save(fig, path)
