"""RMoE Swin Transformer: mmseg's Swin with RMoE FFNs in chosen blocks.

The dense network is mmseg's ``SwinTransformer`` (mmdet's is the same network
with the same key layout), built unchanged; the FFN of each block named by
``moe_blocks`` is then replaced by an :class:`~rmoe_mm.moe.RMoEFFN` whose
core is that FFN. So the forward pass, ``with_cp`` and ``frozen_stages`` are
mmseg's, and a dense Swin checkpoint loads into the cores with no renaming.

One class registered in mmengine's root registry serves both the mmseg and the
mmdet scope (see :mod:`rmoe_mm.registry`).
"""
import copy
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader
from mmseg.models.backbones.swin import SwinTransformer

from rmoe_mm.backbones.swin_window_rule import apply_official_window_rule
from rmoe_mm.classification import move_final_norm
from rmoe_mm.converters.common import extract_backbone_state_dict
from rmoe_mm.converters.loading import load_rmoe_state_dict
from rmoe_mm.converters.swin import DERIVED_BUFFERS, convert_swin_state_dict
from rmoe_mm.moe.placement import convert_ffn_to_moe, resolve_moe_blocks
from rmoe_mm.registry import MODELS

#: Swin sizes of the paper (Liu et al. 2021, Table 1).
SWIN_SIZES: Dict[str, dict] = {
    'tiny': dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    'small': dict(embed_dims=96, depths=(2, 2, 18, 2),
                  num_heads=(3, 6, 12, 24)),
    'base': dict(embed_dims=128, depths=(2, 2, 18, 2),
                 num_heads=(4, 8, 16, 32)),
    'large': dict(embed_dims=192, depths=(2, 2, 18, 2),
                  num_heads=(6, 12, 24, 48)),
}
#: Window size -> the pretraining image size of the released checkpoints.
SWIN_WINDOWS: Dict[int, int] = {7: 224, 12: 384}


def _arch_settings() -> Dict[str, dict]:
    """``'tiny'`` ... ``'large'`` (window 7, 224 px) and ``'-w12'`` (384 px)."""
    settings = {}
    for size, dims in SWIN_SIZES.items():
        for window, img_size in SWIN_WINDOWS.items():
            preset = dict(dims, window_size=window, pretrain_img_size=img_size)
            settings[f'{size}-w{window}'] = preset
            if window == 7:
                settings[size] = preset
    return settings


#: Named presets for ``arch``: tiny, small, base, large (window 7, 224 px
#: pretraining) and tiny-w12 ... large-w12 (window 12, 384 px); ``-w7``
#: spells the default window explicitly.
ARCH_SETTINGS: Dict[str, dict] = _arch_settings()
_DEFAULTS = ARCH_SETTINGS['tiny']


def _resolve_arch(arch: Optional[str], **given) -> dict:
    """Fill the arguments left at ``None`` from ``arch`` (or Swin-T).

    An argument given explicitly must agree with the preset: silently
    preferring one of two contradicting sizes would build a model the
    checkpoint does not fit.
    """
    if arch is None:
        preset = _DEFAULTS
    elif arch in ARCH_SETTINGS:
        preset = ARCH_SETTINGS[arch]
    else:
        raise ValueError(f'unknown Swin arch {arch!r}; choose one of '
                         f'{", ".join(ARCH_SETTINGS)}')
    resolved = {}
    for name, value in given.items():
        if value is None:
            resolved[name] = preset[name]
            continue
        if arch is not None and _normalise(value) != _normalise(preset[name]):
            raise ValueError(
                f'arch={arch!r} sets {name}={preset[name]!r}, but {name}='
                f'{value!r} was given too; drop one of them')
        resolved[name] = value
    return resolved


def _normalise(value):
    """Compare sizes independent of list/tuple and of ``224`` vs ``(224, 224)``."""
    if isinstance(value, (list, tuple)):
        value = tuple(value)
        return value * 2 if len(value) == 1 else value
    return (value, value) if isinstance(value, int) else value


@MODELS.register_module()
class RMoESwinTransformer(SwinTransformer):
    """Swin Transformer whose chosen FFNs are Residual-MoE FFNs.

    Every argument of mmseg's and mmdet's ``SwinTransformer`` is accepted with
    the same meaning and default; ``arch``, ``moe_blocks`` and ``moe_cfg``
    are new. With a dense checkpoint in ``init_cfg``, each MoE FFN's core is
    the dense FFN, residuals start as in ``moe_cfg`` and routers are new.

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
        arch (str, optional): Named size preset (see :data:`ARCH_SETTINGS`):
            fills ``embed_dims``, ``depths``, ``num_heads``, ``window_size``
            and ``pretrain_img_size`` left at None; explicit values must
            agree with it. Default: None (Swin-T sizes for unset arguments).
        moe_blocks (str | Sequence[Sequence[int]], optional): Which blocks get
            an RMoE FFN: one list of block indices per stage (negative
            indices count from the stage end), ``'all'`` or ``'none'``.
            Default: None, the odd (shifted-window) blocks of the last two
            stages.
        moe_cfg (dict, optional): Keyword arguments of
            :meth:`RMoEFFN.from_dense` (num_experts, top_k, router,
            gate_noise, capacity_factor, balance_loss, balance_loss_weight,
            residual_std, alignment, residual_rank). Default: None, the
            RMoEFFN defaults (8 experts, top-1).
        official_window_rule (bool): Where a stage's feature map at
            ``pretrain_img_size`` is not larger than the window, turn the
            shift off and shrink the window to the map, as the official Swin
            does (:mod:`.swin_window_rule`); needed for the official logits
            of the ImageNet checkpoints. Default: False (mmseg's Swin).
    """

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
                 arch: Optional[str] = None,
                 moe_blocks=None,
                 moe_cfg: Optional[dict] = None,
                 official_window_rule: bool = False):
        sizes = _resolve_arch(
            arch,
            embed_dims=embed_dims,
            depths=depths,
            num_heads=num_heads,
            window_size=window_size,
            pretrain_img_size=pretrain_img_size)
        if len(sizes['num_heads']) != len(sizes['depths']):
            raise ValueError(
                f'num_heads {tuple(sizes["num_heads"])} and depths '
                f'{tuple(sizes["depths"])} must have one entry per stage')
        # Fail on a bad placement before building hundreds of MB of weights.
        resolved_blocks = resolve_moe_blocks(moe_blocks, sizes['depths'])
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
        self.moe_cfg = copy.deepcopy(moe_cfg) or {}
        #: Sorted block indices with an RMoE FFN, one list per stage.
        self.moe_blocks = [sorted(stage) for stage in resolved_blocks]
        for stage, blocks in zip(self.stages, self.moe_blocks):
            for index in blocks:
                block = stage.blocks[index]
                block.ffn = convert_ffn_to_moe(block.ffn, self.moe_cfg)

    def forward(self, x):
        """mmseg's Swin forward; the outputs as a tuple, which mmpretrain's
        necks require (mmseg's and mmdet's heads take either)."""
        return tuple(super().forward(x))

    # ------------------------------------------------------------ weights
    def init_weights(self):
        """From scratch as mmseg's Swin, or from a dense / RMoE checkpoint.

        From scratch, mmseg's pass re-draws every ``nn.Linear`` (cores and the
        linear router gate included: trunc-normal, std 0.02, the router's own
        init) and leaves the residuals at their construction-time noise.
        """
        if self.init_cfg is None:
            super().init_weights()
            return
        if not isinstance(self.init_cfg, dict) or \
                self.init_cfg.get('type') != 'Pretrained' or \
                'checkpoint' not in self.init_cfg:
            raise ValueError(
                f'{type(self).__name__} supports init_cfg=None or '
                "dict(type='Pretrained', checkpoint=...), got "
                f'{self.init_cfg}')
        self.load_pretrained(self.init_cfg['checkpoint'],
                             prefix=self.init_cfg.get('prefix'),
                             final_norm=self.init_cfg.get('final_norm', False))

    def load_pretrained(self, checkpoint: str, prefix: Optional[str] = None,
                        final_norm: bool = False):
        """Load a Swin checkpoint file of any supported layout.

        Args:
            checkpoint: path (or URL) of a dense or RMoE Swin checkpoint.
            prefix: the backbone's prefix in a whole-model checkpoint; by
                default ``backbone.`` is used when present.
            final_norm: load the checkpoint's final norm (official ``norm``,
                after the last stage) into the last stage's output norm, as
                a classifier needs (mmseg and mmdet leave it out).

        Returns:
            LoadReport: what was loaded, initialised and ignored (also
            logged).
        """
        try:
            ckpt = CheckpointLoader.load_checkpoint(
                checkpoint, map_location='cpu', logger='current')
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f'Swin checkpoint {checkpoint!r} not found (see docs/swin.md '
                'for where to put the official Swin files, or set '
                'init_cfg=None to train from scratch)') from err
        state_dict, ignored = extract_backbone_state_dict(ckpt, prefix)
        state_dict, layout = convert_swin_state_dict(state_dict)
        if final_norm:
            state_dict = move_final_norm(state_dict, self._final_norm_name())
        official = layout in ('official', 'timm')
        if bool(self.convert_weights) != official:
            print_log(
                f'convert_weights={self.convert_weights} but {checkpoint} is '
                f'in the {layout} layout; it is converted according to its '
                'keys', logger='current')
        recomputed = [k for k in state_dict
                      if k.rsplit('.', 1)[-1] in DERIVED_BUFFERS]
        for key in recomputed:
            del state_dict[key]
        state_dict = self._fit_position_tables(state_dict)
        model_buffers = [k for k, _ in self.named_buffers()
                         if k.rsplit('.', 1)[-1] in DERIVED_BUFFERS]
        return load_rmoe_state_dict(
            self,
            state_dict,
            source=str(checkpoint),
            layout=layout,
            ignored=ignored,
            recomputed=sorted(set(recomputed) | set(model_buffers)))

    def _final_norm_name(self) -> str:
        """The last stage's output norm: a classifier's final norm."""
        name = f'norm{len(self.stages) - 1}'
        if not hasattr(self, name):
            raise ValueError(
                f'init_cfg final_norm=True loads the final norm into {name}, '
                'but this backbone has none: put the last stage in '
                'out_indices')
        return name

    def _fit_position_tables(self, state_dict):
        """Resize relative-position tables to this window, as mmseg does
        (bicubic), and absolute position embeddings to this grid."""
        own = self.state_dict()
        for key, table in list(state_dict.items()):
            if not key.endswith('relative_position_bias_table') or \
                    key not in own:
                continue
            (len_ckpt, heads_ckpt), (len_own, heads_own) = \
                table.shape, own[key].shape
            if heads_ckpt == heads_own and len_ckpt != len_own:
                state_dict[key] = _resize_table(table, len_own)
        pos = state_dict.get('absolute_pos_embed')
        if pos is not None and self.use_abs_pos_embed and \
                pos.shape != self.absolute_pos_embed.shape and \
                pos.shape[-1] == self.absolute_pos_embed.shape[-1]:
            state_dict['absolute_pos_embed'] = _resize_pos_embed(
                pos, self.absolute_pos_embed.shape[1])
        return state_dict


def _resize_table(table: torch.Tensor, length: int) -> torch.Tensor:
    """``[(2W-1)^2, heads]`` bias table -> ``[length, heads]``, bicubic."""
    heads = table.shape[1]
    side_in, side_out = int(table.shape[0]**0.5), int(length**0.5)
    grid = table.permute(1, 0).reshape(1, heads, side_in, side_in)
    grid = F.interpolate(grid, size=(side_out, side_out), mode='bicubic')
    return grid.reshape(heads, length).permute(1, 0).contiguous()


def _resize_pos_embed(pos: torch.Tensor, length: int) -> torch.Tensor:
    """``[1, L, C]`` square-grid position embedding -> ``[1, length, C]``."""
    channels = pos.shape[-1]
    side_in, side_out = int(pos.shape[1]**0.5), int(length**0.5)
    grid = pos.reshape(1, side_in, side_in, channels).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(side_out, side_out), mode='bicubic')
    return grid.permute(0, 2, 3, 1).reshape(1, length, channels)
