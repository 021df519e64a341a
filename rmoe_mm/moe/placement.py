"""Which transformer blocks become MoE, shared by every RMoE backbone.

A backbone with stages of ``depths`` blocks asks :func:`resolve_moe_blocks`
which block indices of each stage get an RMoE FFN, then calls
:func:`convert_ffn_to_moe` on those blocks' dense FFNs. Keeping both here is
what makes ``moe_blocks`` mean the same thing for Swin and CvT.
"""
from typing import List, Sequence, Set, Union

from torch import nn

from .config import MoEConfig
from .residual_ffn import RMoEFFN

MoEBlocks = Union[None, str, Sequence[Sequence[int]]]


def default_moe_blocks(depths: Sequence[int]) -> List[List[int]]:
    """Swin-MoE placement: the odd (shifted-window) blocks of the last two
    stages."""
    num_stages = len(depths)
    return [
        list(range(1, depth, 2)) if stage >= num_stages - 2 else []
        for stage, depth in enumerate(depths)
    ]


def resolve_moe_blocks(moe_blocks: MoEBlocks,
                       depths: Sequence[int]) -> List[Set[int]]:
    """Normalise ``moe_blocks`` to one set of non-negative block indices per
    stage.

    Args:
        moe_blocks: ``None`` or ``'default'`` (odd blocks of the last two
            stages), ``'all'``, ``'none'``, or one list of block indices per
            stage; negative indices count from the end of the stage.
        depths: number of blocks in each stage.

    Raises:
        ValueError: wrong number of stages, an index out of range or repeated.
    """
    depths = list(depths)
    if moe_blocks is None or moe_blocks == 'default':
        moe_blocks = default_moe_blocks(depths)
    elif moe_blocks == 'all':
        moe_blocks = [list(range(d)) for d in depths]
    elif moe_blocks == 'none':
        moe_blocks = [[] for _ in depths]
    elif isinstance(moe_blocks, str):
        raise ValueError("moe_blocks must be None, 'default', 'all', 'none' "
                         'or one list of block indices per stage, got '
                         f'{moe_blocks!r}')
    moe_blocks = [list(stage) for stage in moe_blocks]
    if len(moe_blocks) != len(depths):
        raise ValueError(
            f'moe_blocks has {len(moe_blocks)} stage lists but the backbone '
            f'has {len(depths)} stages (depths={depths}); give one list per '
            'stage, [] for a stage without MoE blocks')
    resolved = []
    for stage, (indices, depth) in enumerate(zip(moe_blocks, depths)):
        stage_set: Set[int] = set()
        for index in indices:
            if not isinstance(index, int) or isinstance(index, bool):
                raise ValueError(f'moe_blocks[{stage}] holds {index!r}; '
                                 'block indices must be integers')
            if not -depth <= index < depth:
                raise ValueError(
                    f'moe_blocks[{stage}] holds block index {index}, but '
                    f'stage {stage} has {depth} blocks (valid: '
                    f'{-depth}..{depth - 1})')
            normalised = index % depth
            if normalised in stage_set:
                raise ValueError(f'moe_blocks[{stage}] names block '
                                 f'{normalised} twice')
            stage_set.add(normalised)
        resolved.append(stage_set)
    return resolved


def convert_ffn_to_moe(dense_ffn: nn.Module, moe_cfg: Union[MoEConfig, dict,
                                                            None]) -> RMoEFFN:
    """An RMoE FFN whose shared weights are ``dense_ffn``'s (same shapes,
    same values)."""
    return RMoEFFN.from_dense(dense_ffn, moe_cfg)
