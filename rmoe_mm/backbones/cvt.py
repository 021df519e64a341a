"""CvT: Convolutional vision Transformer (Wu et al., ICCV 2021), dense.

The architecture follows the official code (microsoft/CvT,
``lib/models/cls_cvt.py``): every stage starts with a convolutional token
embedding (conv + LayerNorm), there is no position embedding, and attention
projects queries, keys and values with a depthwise conv + BatchNorm ("dw_bn")
before the usual linear projections, keys and values at stride 2. Blocks are
pre-norm and the MLP uses QuickGELU, as in the official model.

Module names mirror the official ones (``patch_embed.proj``,
``attn.conv_proj_q.conv``, ``attn.proj_q``, ``norm1`` ...) so that checkpoint
conversion is a short renaming (``rmoe_mm.converters.cvt``). The one
deliberate difference is the MLP: it is an mmcv ``FFN`` (``ffn.layers.0.0`` =
fc1, ``ffn.layers.1`` = fc2), which is what makes the RMoE form
(:mod:`.rmoe_cvt`) a plain FFN swap through the shared
:class:`~.base.RMoEBackboneMixin`.

For dense prediction the backbone adds a LayerNorm per output and, by
default, a fourth stride-32 level made by one more convolutional token
embedding; see ``docs/cvt.md`` for why.
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks.transformer import FFN, build_dropout
from mmengine.model import BaseModule, ModuleList
from mmengine.model.weight_init import trunc_normal_
from timm.layers.activations import QuickGELU
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from rmoe_mm.checkpoint.fit import guard_backbone_loads
from rmoe_mm.converters.common import StateDict
from rmoe_mm.converters.cvt import convert_cvt_state_dict
from rmoe_mm.registry import MODELS
from .base import RMoEBackboneMixin

# The official CvT MLP uses QuickGELU, ``x * sigmoid(1.702 x)``: timm's, whose
# dummy ``inplace`` lets an act_cfg written for ReLU build too.
# NOTE: transformers' ``CvtModel`` uses the exact ``nn.GELU`` instead, but its
# weights are converted from the official (QuickGELU-trained) ones. mmcv and
# mmengine do not register a QuickGELU; mmseg registers one in its own child
# registry only, so the mmdet scope would not find it. The root entry makes
# ``act_cfg=dict(type='QuickGELU')`` buildable from both scopes.
if 'QuickGELU' not in MODELS.module_dict:
    MODELS.register_module(name='QuickGELU', module=QuickGELU)


def _tokens_to_map(x: torch.Tensor, hw_shape: Tuple[int, int]) -> torch.Tensor:
    """``[B, H*W, C]`` tokens to a ``[B, C, H, W]`` map."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *hw_shape)


class ConvEmbed(BaseModule):
    """Convolutional token embedding: a strided conv, then a LayerNorm over
    channels.

    Args:
        in_channels (int): Channels of the input map.
        embed_dims (int): Channels of the output tokens.
        kernel_size (int): Conv kernel size. Defaults to 7.
        stride (int): Conv stride (the downsampling factor). Defaults to 4.
        padding (int): Conv padding. Defaults to 2.
        norm_cfg (dict): Norm applied to the tokens. Defaults to LayerNorm.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
    """

    def __init__(self,
                 in_channels: int,
                 embed_dims: int,
                 kernel_size: int = 7,
                 stride: int = 4,
                 padding: int = 2,
                 norm_cfg: dict = dict(type='LN', eps=1e-5),
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg)
        self.proj = nn.Conv2d(
            in_channels,
            embed_dims,
            kernel_size,
            stride=stride,
            padding=padding)
        self.norm = build_norm_layer(norm_cfg, embed_dims)[1]

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """``[B, C_in, H, W]`` to tokens ``[B, H'*W', C]`` and ``(H', W')``."""
        x = self.proj(x)
        hw_shape = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), hw_shape


class ConvProjection(BaseModule):
    """The convolutional part of a q/k/v projection, on the token map.

    ``'dw_bn'`` is a depthwise conv followed by BatchNorm (the CvT default),
    ``'avg'`` an average pool, ``'linear'`` nothing (tokens pass unchanged).

    Args:
        channels (int): Channels of the token map.
        method (str): ``'dw_bn'``, ``'avg'`` or ``'linear'``.
        kernel_size (int): Kernel of the conv or pool. Defaults to 3.
        stride (int): Stride of the conv or pool. Defaults to 1.
        padding (int): Padding of the conv or pool. Defaults to 1.
        norm_cfg (dict): Norm after the depthwise conv. Defaults to BN.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
    """

    METHODS = ('dw_bn', 'avg', 'linear')

    def __init__(self,
                 channels: int,
                 method: str = 'dw_bn',
                 kernel_size: int = 3,
                 stride: int = 1,
                 padding: int = 1,
                 norm_cfg: dict = dict(type='BN'),
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg)
        if method not in self.METHODS:
            raise ValueError(f'qkv_proj_method must be one of {self.METHODS}, '
                             f'got {method!r}')
        self.method = method
        if method == 'dw_bn':
            self.conv = nn.Conv2d(
                channels,
                channels,
                kernel_size,
                stride=stride,
                padding=padding,
                groups=channels,
                bias=False)
            self.bn = build_norm_layer(norm_cfg, channels)[1]
        elif method == 'avg':
            self.pool = nn.AvgPool2d(
                kernel_size, stride=stride, padding=padding, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[B, C, H, W]`` to tokens ``[B, H'*W', C]``."""
        if self.method == 'dw_bn':
            x = self.bn(self.conv(x))
        elif self.method == 'avg':
            x = self.pool(x)
        return x.flatten(2).transpose(1, 2)


class ConvAttention(BaseModule):
    """Multi-head self-attention with convolutional q/k/v projections.

    NOTE: the attention logits are scaled by ``embed_dims ** -0.5``, the full
    width and not the head width, exactly as the official code does; the
    pretrained weights expect it.

    Args:
        embed_dims (int): Token channels.
        num_heads (int): Number of attention heads.
        qkv_bias (bool): Bias in the linear q/k/v projections.
            Defaults to True.
        attn_drop_rate (float): Dropout on the attention weights.
            Defaults to 0.
        proj_drop_rate (float): Dropout after the output projection.
            Defaults to 0.
        qkv_proj_method (str): See :class:`ConvProjection`. Queries use
            ``'linear'`` when this is ``'avg'``, as in the official code.
            Defaults to ``'dw_bn'``.
        kernel_size (int): Kernel of the conv projections. Defaults to 3.
        stride_q (int): Stride of the query projection. Defaults to 1.
        stride_kv (int): Stride of the key/value projections. Defaults to 2.
        padding_q (int): Padding of the query projection. Defaults to 1.
        padding_kv (int): Padding of the key/value projections. Defaults to 1.
        with_cls_token (bool): Whether the first token is a cls token, which
            skips the conv projections and attends and is attended to.
            Defaults to False.
        proj_norm_cfg (dict): Norm of the conv projections. Defaults to BN.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 qkv_bias: bool = True,
                 attn_drop_rate: float = 0.,
                 proj_drop_rate: float = 0.,
                 qkv_proj_method: str = 'dw_bn',
                 kernel_size: int = 3,
                 stride_q: int = 1,
                 stride_kv: int = 2,
                 padding_q: int = 1,
                 padding_kv: int = 1,
                 with_cls_token: bool = False,
                 proj_norm_cfg: dict = dict(type='BN'),
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg)
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims ({embed_dims}) must be divisible by '
                             f'num_heads ({num_heads})')
        self.num_heads = num_heads
        self.scale = embed_dims**-0.5
        self.attn_drop_rate = attn_drop_rate
        self.with_cls_token = with_cls_token
        q_method = 'linear' if qkv_proj_method == 'avg' else qkv_proj_method
        self.conv_proj_q = ConvProjection(embed_dims, q_method, kernel_size,
                                          stride_q, padding_q, proj_norm_cfg)
        self.conv_proj_k = ConvProjection(embed_dims, qkv_proj_method,
                                          kernel_size, stride_kv, padding_kv,
                                          proj_norm_cfg)
        self.conv_proj_v = ConvProjection(embed_dims, qkv_proj_method,
                                          kernel_size, stride_kv, padding_kv,
                                          proj_norm_cfg)
        self.proj_q = nn.Linear(embed_dims, embed_dims, bias=qkv_bias)
        self.proj_k = nn.Linear(embed_dims, embed_dims, bias=qkv_bias)
        self.proj_v = nn.Linear(embed_dims, embed_dims, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop_rate)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N, C]`` to ``[B, heads, N, C / heads]``."""
        batch, tokens, channels = x.shape
        return x.reshape(batch, tokens, self.num_heads,
                         channels // self.num_heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, hw_shape: Tuple[int,
                                                       int]) -> torch.Tensor:
        """Attend over tokens ``[B, (1 +) H*W, C]`` of an ``hw_shape`` map."""
        if self.with_cls_token:
            cls_token, x = x[:, :1], x[:, 1:]
        x_map = _tokens_to_map(x, hw_shape)
        q = self.conv_proj_q(x_map)
        k = self.conv_proj_k(x_map)
        v = self.conv_proj_v(x_map)
        if self.with_cls_token:
            q, k, v = (torch.cat((cls_token, t), dim=1) for t in (q, k, v))
        q = self._split_heads(self.proj_q(q))
        k = self._split_heads(self.proj_k(k))
        v = self._split_heads(self.proj_v(v))
        x = F.scaled_dot_product_attention(
            q,
            k,
            v,
            dropout_p=self.attn_drop_rate if self.training else 0.,
            scale=self.scale)
        x = x.transpose(1, 2).flatten(2)
        return self.proj_drop(self.proj(x))


class CvTBlock(BaseModule):
    """Pre-norm transformer block: conv attention, then an mmcv ``FFN`` MLP.

    Args:
        embed_dims (int): Token channels.
        num_heads (int): Number of attention heads.
        mlp_ratio (float): Hidden width of the MLP over ``embed_dims``.
            Defaults to 4.
        drop_rate (float): Dropout after the attention and in the MLP.
            Defaults to 0.
        drop_path_rate (float): Stochastic depth of both branches.
            Defaults to 0.
        act_cfg (dict): MLP activation. Defaults to QuickGELU.
        norm_cfg (dict): Pre-norms. Defaults to LayerNorm (eps 1e-5).
        with_cp (bool): Recompute the block in backward to save memory.
            Defaults to False.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
        **attn_kwargs: Passed to :class:`ConvAttention` (``qkv_bias``,
            ``attn_drop_rate``, strides, ``with_cls_token``...).
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 mlp_ratio: float = 4.,
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 act_cfg: dict = dict(type='QuickGELU'),
                 norm_cfg: dict = dict(type='LN', eps=1e-5),
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None,
                 **attn_kwargs):
        super().__init__(init_cfg)
        self.with_cp = with_cp
        self.norm1 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.attn = ConvAttention(
            embed_dims, num_heads, proj_drop_rate=drop_rate, **attn_kwargs)
        self.drop_path = build_dropout(
            dict(type='DropPath', drop_prob=drop_path_rate))
        self.norm2 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.ffn = FFN(
            embed_dims=embed_dims,
            feedforward_channels=int(embed_dims * mlp_ratio),
            num_fcs=2,
            act_cfg=act_cfg,
            ffn_drop=drop_rate,
            dropout_layer=dict(type='DropPath', drop_prob=drop_path_rate),
            add_identity=True)

    def forward(self, x: torch.Tensor, hw_shape: Tuple[int,
                                                       int]) -> torch.Tensor:

        def _inner_forward(x):
            x = x + self.drop_path(self.attn(self.norm1(x), hw_shape))
            return self.ffn(self.norm2(x), identity=x)

        if self.with_cp and x.requires_grad:
            return cp.checkpoint(_inner_forward, x, use_reentrant=False)
        return _inner_forward(x)


class CvTStage(BaseModule):
    """A convolutional token embedding followed by ``depth`` CvT blocks.

    Args:
        in_channels (int): Channels of the input map.
        embed_dims (int): Token channels of the stage.
        depth (int): Number of blocks.
        num_heads (int): Attention heads of every block.
        patch_size (int): Kernel of the token embedding conv.
        patch_stride (int): Stride of the token embedding conv.
        patch_padding (int): Padding of the token embedding conv.
        drop_path_rates (Sequence[float]): Stochastic depth of each block.
        with_cls_token (bool): Whether the stage carries a learned cls token
            through its blocks (the last official stage does). The token
            takes part in attention, so it changes the patch features; it is
            dropped from the output. Defaults to False.
        norm_cfg (dict): Norm of the token embedding and the blocks.
            Defaults to LayerNorm (eps 1e-5).
        init_cfg (dict, optional): Initialisation config. Defaults to None.
        **block_kwargs: Passed to every :class:`CvTBlock`.
    """

    def __init__(self,
                 in_channels: int,
                 embed_dims: int,
                 depth: int,
                 num_heads: int,
                 patch_size: int,
                 patch_stride: int,
                 patch_padding: int,
                 drop_path_rates: Sequence[float],
                 with_cls_token: bool = False,
                 norm_cfg: dict = dict(type='LN', eps=1e-5),
                 init_cfg: Optional[dict] = None,
                 **block_kwargs):
        super().__init__(init_cfg)
        self.patch_embed = ConvEmbed(in_channels, embed_dims, patch_size,
                                     patch_stride, patch_padding, norm_cfg)
        self.with_cls_token = with_cls_token
        if with_cls_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dims))
        self.blocks = ModuleList([
            CvTBlock(
                embed_dims,
                num_heads,
                drop_path_rate=drop_path_rates[i],
                norm_cfg=norm_cfg,
                with_cls_token=with_cls_token,
                **block_kwargs) for i in range(depth)
        ])

    def forward(self, x: torch.Tensor, return_cls_token: bool = False):
        """Map ``[B, C_in, H, W]`` to the stage output ``[B, C, H', W']``
        (and, with ``return_cls_token``, the cls token ``[B, C]``)."""
        x, hw_shape = self.patch_embed(x)
        if self.with_cls_token:
            cls_token = self.cls_token.expand(x.shape[0], -1, -1)
            x = torch.cat((cls_token, x), dim=1)
        for block in self.blocks:
            x = block(x, hw_shape)
        cls_token = None
        if self.with_cls_token:
            cls_token, x = x[:, 0], x[:, 1:]
        x = _tokens_to_map(x, hw_shape)
        return (x, cls_token) if return_cls_token else x


def _drop_path_rates(drop_path_rate: Union[float, Sequence[float]],
                     depths: Sequence[int]) -> List[List[float]]:
    """Stochastic depth per block, per stage.

    A float rises linearly over all blocks (mmseg/mmdet convention); one value
    per stage rises linearly within each stage (the official CvT convention,
    e.g. ``(0., 0., 0.1)`` for CvT-13).
    """
    if isinstance(drop_path_rate, (int, float)):
        rates = torch.linspace(
            0, drop_path_rate, sum(depths), device='cpu').tolist()
        splits = [sum(depths[:i]) for i in range(len(depths) + 1)]
        return [rates[splits[i]:splits[i + 1]] for i in range(len(depths))]
    if len(drop_path_rate) != len(depths):
        raise ValueError(f'drop_path_rate has {len(drop_path_rate)} values '
                         f'but there are {len(depths)} stages; give a float '
                         'or one value per stage')
    return [
        torch.linspace(0, rate, depth, device='cpu').tolist()
        for rate, depth in zip(drop_path_rate, depths)
    ]


@MODELS.register_module()
class CvT(RMoEBackboneMixin, BaseModule):
    """Convolutional vision Transformer backbone for dense prediction.

    A reimplementation of the official CvT (arXiv 2103.15808) that loads its
    ImageNet checkpoints (official and transformers layouts, converted on the
    fly by :func:`rmoe_mm.converters.cvt.convert_cvt_state_dict`).

    The three CvT stages give strides 4/8/16. With ``extra_level='conv'`` one
    more convolutional token embedding (3x3, stride 2, LayerNorm, the
    operator CvT itself uses between stages) adds a stride-32 output, so the
    usual 4-level UperNet and FPN configurations work unchanged;
    ``'pool'`` adds a parameter-free stride-2 max-pool level instead and
    ``None`` keeps three levels.

    Args:
        arch (str | dict): ``'13'``, ``'21'`` or ``'w24'`` (``'cvt-13'`` ...
            also accepted), or a dict with ``embed_dims``, ``depths`` and
            ``num_heads`` (one value per stage). Defaults to ``'13'``.
        in_channels (int): Image channels. Defaults to 3.
        patch_sizes (Sequence[int]): Token embedding kernels.
            Defaults to (7, 3, 3).
        patch_strides (Sequence[int]): Token embedding strides.
            Defaults to (4, 2, 2).
        patch_paddings (Sequence[int]): Token embedding paddings.
            Defaults to (2, 1, 1).
        mlp_ratio (float): MLP width over token width. Defaults to 4.
        qkv_bias (bool): Bias in the q/k/v linear projections.
            Defaults to True (as the official presets).
        with_cls_token (Sequence[bool]): Per stage, whether the stage carries
            a cls token. Defaults to (False, False, True), as the official
            presets, so pretrained attention sees the token it was trained
            with.
        qkv_proj_method (str): ``'dw_bn'``, ``'avg'`` or ``'linear'``.
            Defaults to ``'dw_bn'``.
        kernel_qkv (int): Kernel of the q/k/v conv projections. Defaults to 3.
        stride_q (int): Query projection stride. Defaults to 1.
        stride_kv (int): Key/value projection stride. Defaults to 2.
        padding_q (int): Query projection padding. Defaults to 1.
        padding_kv (int): Key/value projection padding. Defaults to 1.
        drop_rate (float): Dropout after attention and in the MLP.
            Defaults to 0.
        attn_drop_rate (float): Dropout on attention weights. Defaults to 0.
        drop_path_rate (float | Sequence[float]): Stochastic depth: a float
            rises linearly over all blocks; one value per stage rises within
            each stage (official convention). Defaults to 0.1.
        act_cfg (dict): MLP activation. Defaults to QuickGELU (official).
        norm_cfg (dict): LayerNorms. Defaults to ``dict(type='LN', eps=1e-5)``.
        proj_norm_cfg (dict): Norm of the conv projections. Defaults to BN;
            use SyncBN for multi-GPU training.
        out_indices (Sequence[int], optional): Outputs to return: 0-2 are
            the stages (strides 4/8/16), 3 the extra level (stride 32).
            Defaults to None: every level, (0, 1, 2, 3) with the extra
            level, (0, 1, 2) without.
        extra_level (str, optional): ``'conv'``, ``'pool'`` or None, see
            above. Defaults to ``'conv'``.
        out_norm (bool): Add a LayerNorm on each stage output (``norm{i}``),
            as mmseg's Swin does; CvT stages end on the un-normalised
            residual stream. Defaults to True.
        with_cp (bool): Gradient checkpointing of every block.
            Defaults to False.
        frozen_stages (int): Freeze the first ``frozen_stages`` stages (token
            embedding, blocks, cls token, output norm; BatchNorms kept in eval
            mode). -1 or 0 freezes nothing. Defaults to -1.
        norm_eval (bool): Keep every BatchNorm in eval mode while training.
            Defaults to False.
        init_cfg (dict, optional): ``dict(type='Pretrained',
            checkpoint=...)`` loads an official, transformers or rmoe_mm CvT
            checkpoint (``final_norm=True`` also loads its final norm into
            the last output norm, for classifiers); None initialises as the
            official code does. Defaults to None.
        out_type (str): ``'featmap'``: feature maps of ``out_indices``;
            ``'cls_token'``: the last stage's normalised cls token ``[B, C]``
            only, the official CvT classifier's input (needs the last stage
            to carry a cls token, ``out_indices=(2,)`` and ``out_norm``).
            Defaults to ``'featmap'``.
    """

    family = 'CvT'
    checkpoint_doc = 'docs/cvt.md'
    #: Official presets (``'cvt-13'`` ... are accepted too).
    arch_zoo = {
        '13':
        dict(
            embed_dims=(64, 192, 384), depths=(1, 2, 10), num_heads=(1, 3, 6)),
        '21':
        dict(
            embed_dims=(64, 192, 384), depths=(1, 4, 16), num_heads=(1, 3, 6)),
        'w24':
        dict(
            embed_dims=(192, 768, 1024),
            depths=(2, 2, 20),
            num_heads=(3, 12, 16)),
    }
    EXTRA_LEVELS = ('conv', 'pool', None)
    OUT_TYPES = ('featmap', 'cls_token')

    def __init__(self,
                 arch: Union[str, Dict] = '13',
                 in_channels: int = 3,
                 patch_sizes: Sequence[int] = (7, 3, 3),
                 patch_strides: Sequence[int] = (4, 2, 2),
                 patch_paddings: Sequence[int] = (2, 1, 1),
                 mlp_ratio: float = 4.,
                 qkv_bias: bool = True,
                 with_cls_token: Sequence[bool] = (False, False, True),
                 qkv_proj_method: str = 'dw_bn',
                 kernel_qkv: int = 3,
                 stride_q: int = 1,
                 stride_kv: int = 2,
                 padding_q: int = 1,
                 padding_kv: int = 1,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: Union[float, Sequence[float]] = 0.1,
                 act_cfg: dict = dict(type='QuickGELU'),
                 norm_cfg: dict = dict(type='LN', eps=1e-5),
                 proj_norm_cfg: dict = dict(type='BN'),
                 out_indices: Optional[Sequence[int]] = None,
                 extra_level: Optional[str] = 'conv',
                 out_norm: bool = True,
                 with_cp: bool = False,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 init_cfg: Optional[dict] = None,
                 out_type: str = 'featmap'):
        super().__init__(init_cfg)
        arch_cfg = self.arch_preset(arch)
        self.embed_dims = list(arch_cfg['embed_dims'])
        self.depths = list(arch_cfg['depths'])
        self.num_heads = list(arch_cfg['num_heads'])
        num_stages = len(self.depths)
        per_stage = dict(
            patch_sizes=patch_sizes,
            patch_strides=patch_strides,
            patch_paddings=patch_paddings,
            with_cls_token=with_cls_token,
            embed_dims=self.embed_dims,
            num_heads=self.num_heads)
        for name, values in per_stage.items():
            if len(values) != num_stages:
                raise ValueError(f'{name} has {len(values)} values but the '
                                 f'arch has {num_stages} stages')
        if extra_level not in self.EXTRA_LEVELS:
            raise ValueError('extra_level must be one of '
                             f'{self.EXTRA_LEVELS}, got {extra_level!r}')
        num_levels = num_stages + (extra_level is not None)
        out_indices = list(
            range(num_levels) if out_indices is None else out_indices)
        for index in out_indices:
            if not 0 <= index < num_levels:
                raise ValueError(
                    f'out_indices holds {index}, but the backbone has '
                    f'{num_levels} levels (extra_level={extra_level!r})')
        if out_type not in self.OUT_TYPES:
            raise ValueError(f'out_type must be one of {self.OUT_TYPES}, got '
                             f'{out_type!r}')
        if out_type == 'cls_token' and (list(out_indices) != [num_stages - 1]
                                        or not with_cls_token[-1]
                                        or not out_norm):
            raise ValueError(
                "out_type='cls_token' needs out_indices=(2,) (the last "
                'stage only), a cls token in the last stage and out_norm; '
                f'got out_indices={tuple(out_indices)}, with_cls_token='
                f'{tuple(with_cls_token)}, out_norm={out_norm}')
        self.out_type = out_type
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'frozen_stages must be in -1..{num_stages}, got '
                             f'{frozen_stages}')
        self.out_indices = out_indices
        self.extra_level = extra_level
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cls_token = list(with_cls_token)

        dpr = _drop_path_rates(drop_path_rate, self.depths)
        self.stages = ModuleList()
        channels = in_channels
        for i in range(num_stages):
            self.stages.append(
                CvTStage(
                    in_channels=channels,
                    embed_dims=self.embed_dims[i],
                    depth=self.depths[i],
                    num_heads=self.num_heads[i],
                    patch_size=patch_sizes[i],
                    patch_stride=patch_strides[i],
                    patch_padding=patch_paddings[i],
                    drop_path_rates=dpr[i],
                    with_cls_token=with_cls_token[i],
                    norm_cfg=norm_cfg,
                    mlp_ratio=mlp_ratio,
                    drop_rate=drop_rate,
                    act_cfg=act_cfg,
                    with_cp=with_cp,
                    qkv_bias=qkv_bias,
                    attn_drop_rate=attn_drop_rate,
                    qkv_proj_method=qkv_proj_method,
                    kernel_size=kernel_qkv,
                    stride_q=stride_q,
                    stride_kv=stride_kv,
                    padding_q=padding_q,
                    padding_kv=padding_kv,
                    proj_norm_cfg=proj_norm_cfg))
            channels = self.embed_dims[i]
        if extra_level == 'conv':
            self.extra_embed = ConvEmbed(
                channels,
                channels,
                kernel_size=3,
                stride=2,
                padding=1,
                norm_cfg=norm_cfg)
        self.out_channels = self.embed_dims + [channels] * (
            num_levels - num_stages)
        self.out_norm = out_norm
        if out_norm:
            for i in out_indices:
                if i < num_stages:
                    self.add_module(
                        f'norm{i}',
                        build_norm_layer(norm_cfg, self.embed_dims[i])[1])
        self._freeze_stages()
        guard_backbone_loads(self)  # no load into it is silently partial

    # ------------------------------------------------ RMoEBackboneMixin
    def init_from_scratch(self) -> None:
        """The official ``trunc_norm`` init: trunc-normal (std 0.02) Linear
        weights (RMoE shared weights and linear router gates included), zero
        biases, unit LayerNorm/BatchNorm, trunc-normal cls tokens; RMoE
        residuals keep their construction-time noise."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=.02)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, (nn.LayerNorm, _BatchNorm)):
                nn.init.constant_(m.weight, 1.0)
                nn.init.constant_(m.bias, 0)
        for stage in self.stages:
            if stage.with_cls_token:
                trunc_normal_(stage.cls_token, std=.02)

    def convert_state_dict(self,
                           state_dict: StateDict,
                           source: str = '') -> Tuple[StateDict, str]:
        """Any layout of :mod:`rmoe_mm.converters.cvt` -> this one. The
        classifier, the final norm and a cls token this model was built
        without pass through, to be reported as ignored."""
        return convert_cvt_state_dict(state_dict)

    # -------------------------------------------------------------- training
    def _freeze_stages(self) -> None:
        for i in range(max(self.frozen_stages, 0)):
            modules = [self.stages[i]]
            if hasattr(self, f'norm{i}'):
                modules.append(getattr(self, f'norm{i}'))
            for module in modules:
                module.eval()
                for param in module.parameters():
                    param.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Feature maps ``[B, C_i, H / s_i, W / s_i]`` for ``out_indices``."""
        if self.out_type == 'cls_token':
            for stage in self.stages[:-1]:
                x = stage(x)
            _, cls_token = self.stages[-1](x, return_cls_token=True)
            return (getattr(self, f'norm{len(self.stages) - 1}')(cls_token), )
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            feature = x
            norm = getattr(self, f'norm{i}', None)
            if norm is not None:
                feature = norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1,
                                                              2).contiguous()
            if i in self.out_indices:
                outs.append(feature)
        if len(self.stages) in self.out_indices:
            if self.extra_level == 'conv':
                tokens, hw_shape = self.extra_embed(x)
                outs.append(_tokens_to_map(tokens, hw_shape))
            else:  # 'pool', as mmdet's FPN makes its extra levels
                outs.append(F.max_pool2d(feature, kernel_size=1, stride=2))
        return tuple(outs)
