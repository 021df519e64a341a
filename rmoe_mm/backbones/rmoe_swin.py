"""RMoE Swin Transformer: mmseg's Swin with RMoE FFNs in chosen blocks.

The dense network is mmseg's ``SwinTransformer`` (mmdet's is the same network
with the same key layout), built unchanged; the FFN of each block named by
``moe_blocks`` is then replaced by an :class:`~rmoe_mm.moe.RMoEFFN` whose
shared weights are that FFN's (:class:`~.base.RMoEBackboneMixin`). So the
forward pass, ``with_cp`` and ``frozen_stages`` are mmseg's, and a dense Swin
checkpoint loads into the RMoE FFNs with no renaming.

One class registered in mmengine's root registry serves both the mmseg and
the mmdet scope (see :mod:`rmoe_mm.registry`).
"""
import math
from typing import Dict, List, Tuple

from mmengine.logging import print_log
from mmseg.models.backbones.swin import SwinTransformer
from timm.layers import resample_abs_pos_embed
from timm.layers.pos_embed_rel import resize_rel_pos_bias_table_simple

from rmoe_mm.backbones.swin_window_rule import apply_official_window_rule
from rmoe_mm.checkpoint.fit import guard_backbone_loads
from rmoe_mm.converters.common import StateDict
from rmoe_mm.converters.swin import DERIVED_BUFFERS, convert_swin_state_dict
from rmoe_mm.moe.config import MoEConfig
from rmoe_mm.moe.parallel import full_state_shapes
from rmoe_mm.moe.placement import resolve_moe_blocks
from rmoe_mm.registry import MODELS
from .base import RMoEBackboneMixin

#: Swin sizes of the paper (Liu et al. 2021, Table 1).
SWIN_SIZES: Dict[str, dict] = {
    'tiny': dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    'small':
    dict(embed_dims=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    'base':
    dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
    'large':
    dict(embed_dims=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48)),
}
#: Window size -> the pretraining image size of the released checkpoints.
SWIN_WINDOWS: Dict[int, int] = {7: 224, 12: 384}


def _swin_arch_zoo() -> Dict[str, dict]:
    """``'tiny'`` ... ``'large'`` (window 7, 224 px), ``'-w12'`` (384 px)."""
    presets = {}
    for size, dims in SWIN_SIZES.items():
        for window, img_size in SWIN_WINDOWS.items():
            preset = dict(dims, window_size=window, pretrain_img_size=img_size)
            presets[f'{size}-w{window}'] = preset
            if window == 7:
                presets[size] = preset
    return presets


@MODELS.register_module()
class RMoESwinTransformer(RMoEBackboneMixin, SwinTransformer):
    """Swin Transformer whose chosen FFNs are Residual-MoE FFNs.

    Every argument of mmseg's and mmdet's ``SwinTransformer`` is accepted with
    the same meaning and default; ``arch``, ``moe_blocks`` and ``moe_cfg``
    are new. With a dense checkpoint in ``init_cfg``, each RMoE FFN's shared
    weights are the dense FFN's, residuals start as in ``moe_cfg`` and
    routers are new.

    Args:
        pretrain_img_size (int | tuple[int], optional): Input size at
            pretraining (sizes the absolute position embedding). Default:
            from ``arch`` (224 for window 7, 384 for window 12).
        in_channels (int): Input channels. Default: 3.
        embed_dims (int, optional): Channels of stage 1. Default: from
            ``arch`` (96).
        patch_size (int): Patch size. Default: 4.
        window_size (int, optional): Attention window. Default: from ``arch``
            (7).
        mlp_ratio (int | float): FFN hidden / embedding channels. Default: 4.
        depths (Sequence[int], optional): Blocks per stage. Default: from
            ``arch`` ((2, 2, 6, 2)).
        num_heads (Sequence[int], optional): Heads per stage. Default: from
            ``arch`` ((3, 6, 12, 24)).
        strides (Sequence[int]): Patch embedding / merging strides. Default:
            (4, 2, 2, 2).
        out_indices (Sequence[int]): Stages whose outputs are returned.
            Default: (0, 1, 2, 3).
        qkv_bias (bool): Bias in q, k, v. Default: True.
        qk_scale (float, optional): Overrides head_dims ** -0.5. Default: None.
        patch_norm (bool): Norm after patch embedding and merging.
            Default: True.
        drop_rate (float): Dropout rate. Default: 0.
        attn_drop_rate (float): Attention dropout rate. Default: 0.
        drop_path_rate (float): Stochastic depth rate. Default: 0.1.
        use_abs_pos_embed (bool): Absolute position embedding. Default: False.
        act_cfg (dict): FFN activation. Default: dict(type='GELU').
        norm_cfg (dict): Norm layers. Default: dict(type='LN').
        with_cp (bool): Activation checkpointing of each block.
            Default: False.
        pretrained (str, optional): Deprecated, use ``init_cfg``.
        convert_weights (bool): mmdet's flag for official-release checkpoints.
            The layout is detected from the keys here, so both values load
            every supported layout; a flag that contradicts the detected
            layout is reported in the log. Default: False.
        frozen_stages (int): Stages to freeze (-1: none), as in mmseg: their
            MoE routers and residuals are frozen too. Default: -1.
        init_cfg (dict, optional): ``dict(type='Pretrained',
            checkpoint=PATH[, prefix='backbone.'])`` with a dense or RMoE Swin
            checkpoint in any layout of :mod:`rmoe_mm.converters.swin`;
            ``final_norm=True`` also loads the checkpoint's final norm into
            the last output norm (classifiers). Default: None.
        arch (str | dict, optional): Named size preset (see
            :attr:`arch_zoo`) or a dict of the same keys: fills
            ``embed_dims``, ``depths``, ``num_heads``, ``window_size`` and
            ``pretrain_img_size`` left at None; explicit values must agree
            with it. Default: None (Swin-T sizes for unset arguments).
        moe_blocks (str | Sequence[Sequence[int]], optional): Which blocks get
            an RMoE FFN: one list of block indices per stage (negative
            indices count from the stage end), ``'all'`` or ``'none'``.
            Default: None, the odd (shifted-window) blocks of the last two
            stages.
        moe_cfg (dict, optional): Settings of the RMoE FFNs, the fields of
            :class:`~rmoe_mm.moe.MoEConfig` (num_experts, top_k, router,
            gate_noise, capacity_factor, balance_loss, balance_loss_weight,
            residual_std, alignment, residual_rank). Default: None, the
            defaults (8 experts, top-1).
        official_window_rule (bool): Where a stage's feature map at
            ``pretrain_img_size`` is not larger than the window, turn the
            shift off and shrink the window to the map, as the official Swin
            does (:mod:`.swin_window_rule`); needed for the official logits
            of the ImageNet checkpoints. Default: False (mmseg's Swin).
    """

    family = 'Swin'
    checkpoint_doc = 'docs/swin.md'
    #: Named presets for ``arch``: tiny, small, base, large (window 7, 224 px
    #: pretraining) and tiny-w12 ... large-w12 (window 12, 384 px); ``-w7``
    #: spells the default window explicitly.
    arch_zoo: Dict[str, dict] = _swin_arch_zoo()

    def __init__(self,
                 pretrain_img_size=None,
                 in_channels=3,
                 embed_dims=None,
                 patch_size=4,
                 window_size=None,
                 mlp_ratio=4,
                 depths=None,
                 num_heads=None,
                 strides=(4, 2, 2, 2),
                 out_indices=(0, 1, 2, 3),
                 qkv_bias=True,
                 qk_scale=None,
                 patch_norm=True,
                 drop_rate=0.,
                 attn_drop_rate=0.,
                 drop_path_rate=0.1,
                 use_abs_pos_embed=False,
                 act_cfg=dict(type='GELU'),
                 norm_cfg=dict(type='LN'),
                 with_cp=False,
                 pretrained=None,
                 convert_weights=False,
                 frozen_stages=-1,
                 init_cfg=None,
                 *,
                 arch=None,
                 moe_blocks=None,
                 moe_cfg=None,
                 official_window_rule=False):
        sizes = self.resolve_arch(
            arch,
            'tiny',
            embed_dims=embed_dims,
            depths=depths,
            num_heads=num_heads,
            window_size=window_size,
            pretrain_img_size=pretrain_img_size)
        if len(sizes['num_heads']) != len(sizes['depths']):
            raise ValueError(
                f'num_heads {tuple(sizes["num_heads"])} and depths '
                f'{tuple(sizes["depths"])} must have one entry per stage')
        # Fail on bad MoE settings before building hundreds of MB of weights.
        blocks = resolve_moe_blocks(moe_blocks, sizes['depths'])
        cfg = MoEConfig.build(moe_cfg)
        super().__init__(
            in_channels=in_channels,
            patch_size=patch_size,
            mlp_ratio=mlp_ratio,
            strides=strides,
            out_indices=out_indices,
            qkv_bias=qkv_bias,
            qk_scale=qk_scale,
            patch_norm=patch_norm,
            drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate,
            drop_path_rate=drop_path_rate,
            use_abs_pos_embed=use_abs_pos_embed,
            act_cfg=act_cfg,
            norm_cfg=norm_cfg,
            with_cp=with_cp,
            pretrained=pretrained,
            frozen_stages=frozen_stages,
            init_cfg=init_cfg,
            **sizes)
        self.arch = arch
        self.convert_weights = convert_weights
        #: Blocks changed by the official window rule (empty when it is off).
        self.window_rule_changes = apply_official_window_rule(
            self.stages, sizes['pretrain_img_size'],
            strides) if official_window_rule else []
        self.convert_moe_blocks(blocks, cfg)
        guard_backbone_loads(self)  # no load into it is silently partial

    def forward(self, x):
        """mmseg's Swin forward; the outputs as a tuple, which mmpretrain's
        necks require (mmseg's and mmdet's heads take either)."""
        return tuple(super().forward(x))

    # ------------------------------------------------ RMoEBackboneMixin
    def init_from_scratch(self) -> None:
        """mmseg's Swin init: it re-draws every ``nn.Linear`` (the shared FFN
        weights and the linear router gate included: trunc-normal, std
        0.02) and leaves the residuals at their construction-time noise."""
        SwinTransformer.init_weights(self)

    def convert_state_dict(self,
                           state_dict: StateDict,
                           source: str = '') -> Tuple[StateDict, str]:
        """Any layout of :mod:`rmoe_mm.converters.swin` -> the mm* one."""
        state_dict, layout = convert_swin_state_dict(state_dict)
        official = layout in ('official', 'timm')
        if bool(self.convert_weights) != official:
            print_log(
                f'convert_weights={self.convert_weights} but {source} is in '
                f'the {layout} layout; it is converted according to its keys',
                logger='current')
        return state_dict, layout

    def fit_state_dict(self,
                       state_dict: StateDict) -> Tuple[StateDict, List[str]]:
        """Drop the derived buffers (recomputed from this window size) and
        resize relative-position tables to this window, as mmseg does
        (bicubic), and absolute position embeddings to this grid."""
        recomputed = [
            k for k in state_dict if k.rsplit('.', 1)[-1] in DERIVED_BUFFERS
        ]
        for key in recomputed:
            del state_dict[key]
        own = full_state_shapes(self)  # no gather of expert shards
        for key, table in list(state_dict.items()):
            if not key.endswith('relative_position_bias_table') or \
                    key not in own:
                continue
            (len_ckpt, heads_ckpt), (len_own, heads_own) = \
                table.shape, own[key]
            if heads_ckpt == heads_own and len_ckpt != len_own:
                window = (math.isqrt(len_own) + 1) // 2
                state_dict[key] = resize_rel_pos_bias_table_simple(
                    table, (window, window), own[key])
        pos = state_dict.get('absolute_pos_embed')
        own_pos = getattr(self, 'absolute_pos_embed', None)
        if pos is not None and self.use_abs_pos_embed and \
                pos.shape != own_pos.shape and \
                pos.shape[-1] == own_pos.shape[-1]:
            side = math.isqrt(own_pos.shape[1])
            state_dict['absolute_pos_embed'] = resample_abs_pos_embed(
                pos, [side, side], num_prefix_tokens=0, antialias=False)
        model_buffers = [
            k for k, _ in self.named_buffers()
            if k.rsplit('.', 1)[-1] in DERIVED_BUFFERS
        ]
        return state_dict, sorted(set(recomputed) | set(model_buffers))
