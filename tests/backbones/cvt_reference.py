"""An independent CvT reference, transcribed from the official code.

Follows microsoft/CvT ``lib/models/cls_cvt.py`` (``ConvEmbed``, ``Attention``
with ``dw_bn`` projections, ``Block``, ``VisionTransformer`` as a stage,
``ConvolutionalVisionTransformer``) in plain torch, einops replaced by
reshapes. Module names are the official ones, so ``state_dict()`` of
:class:`OfficialCvT` is an official-layout checkpoint. No rmoe_mm, mmcv or
mmengine code is used here.
"""
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class QuickGELU(nn.Module):

    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class Mlp(nn.Module):

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = QuickGELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class ConvEmbed(nn.Module):

    def __init__(self, patch_size, in_chans, embed_dim, stride, padding):
        super().__init__()
        self.proj = nn.Conv2d(
            in_chans,
            embed_dim,
            kernel_size=patch_size,
            stride=stride,
            padding=padding)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-5)

    def forward(self, x):
        x = self.proj(x)
        b, c, h, w = x.shape
        x = self.norm(x.reshape(b, c, h * w).permute(0, 2, 1))
        return x.permute(0, 2, 1).reshape(b, c, h, w)


def _dw_bn(dim, stride):
    return nn.Sequential(
        OrderedDict([
            ('conv',
             nn.Conv2d(
                 dim,
                 dim,
                 kernel_size=3,
                 padding=1,
                 stride=stride,
                 bias=False,
                 groups=dim)),
            ('bn', nn.BatchNorm2d(dim)),
        ]))


class Attention(nn.Module):

    def __init__(self, dim, num_heads, qkv_bias, stride_kv, stride_q,
                 with_cls_token):
        super().__init__()
        self.num_heads = num_heads
        self.scale = dim**-0.5
        self.with_cls_token = with_cls_token
        self.conv_proj_q = _dw_bn(dim, stride_q)
        self.conv_proj_k = _dw_bn(dim, stride_kv)
        self.conv_proj_v = _dw_bn(dim, stride_kv)
        self.proj_q = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj_k = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj_v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def _heads(self, x):  # 'b t (h d) -> b h t d'
        b, t, c = x.shape
        return x.reshape(b, t, self.num_heads,
                         c // self.num_heads).permute(0, 2, 1, 3)

    def forward(self, x, h, w):
        if self.with_cls_token:
            cls_token, x = torch.split(x, [1, h * w], 1)
        b, _, c = x.shape
        x = x.permute(0, 2, 1).reshape(b, c, h, w)  # 'b (h w) c -> b c h w'
        q, k, v = (
            proj(x).flatten(2).permute(0, 2, 1)
            for proj in (self.conv_proj_q, self.conv_proj_k, self.conv_proj_v))
        if self.with_cls_token:
            q = torch.cat((cls_token, q), dim=1)
            k = torch.cat((cls_token, k), dim=1)
            v = torch.cat((cls_token, v), dim=1)
        q = self._heads(self.proj_q(q))
        k = self._heads(self.proj_k(k))
        v = self._heads(self.proj_v(v))
        attn = F.softmax(
            torch.einsum('bhlk,bhtk->bhlt', q, k) * self.scale, dim=-1)
        x = torch.einsum('bhlt,bhtv->bhlv', attn, v)
        b, heads, t, d = x.shape
        x = x.permute(0, 2, 1, 3).reshape(b, t, heads * d)
        return self.proj(x)


class Block(nn.Module):

    def __init__(self, dim, num_heads, mlp_ratio, qkv_bias, stride_kv,
                 stride_q, with_cls_token):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn = Attention(dim, num_heads, qkv_bias, stride_kv, stride_q,
                              with_cls_token)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, h, w):
        x = x + self.attn(self.norm1(x), h, w)
        return x + self.mlp(self.norm2(x))


class Stage(nn.Module):
    """The official ``VisionTransformer`` class: one CvT stage."""

    def __init__(self,
                 in_chans,
                 dim,
                 depth,
                 num_heads,
                 patch_size,
                 patch_stride,
                 patch_padding,
                 with_cls_token,
                 mlp_ratio=4.,
                 qkv_bias=True,
                 stride_kv=2,
                 stride_q=1):
        super().__init__()
        self.patch_embed = ConvEmbed(patch_size, in_chans, dim, patch_stride,
                                     patch_padding)
        self.cls_token = (
            nn.Parameter(torch.zeros(1, 1, dim)) if with_cls_token else None)
        self.blocks = nn.ModuleList([
            Block(dim, num_heads, mlp_ratio, qkv_bias, stride_kv, stride_q,
                  with_cls_token) for _ in range(depth)
        ])

    def forward(self, x):
        x = self.patch_embed(x)
        b, c, h, w = x.shape
        x = x.flatten(2).permute(0, 2, 1)
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(b, -1, -1), x), dim=1)
        for block in self.blocks:
            x = block(x, h, w)
        cls_tokens = None
        if self.cls_token is not None:
            cls_tokens, x = torch.split(x, [1, h * w], 1)
        return x.permute(0, 2, 1).reshape(b, c, h, w), cls_tokens


class OfficialCvT(nn.Module):
    """``ConvolutionalVisionTransformer``; ``forward`` returns every stage map,
    ``logits`` the classifier's output."""

    def __init__(self,
                 dims,
                 depths,
                 heads,
                 with_cls_token=(False, False, True),
                 patch_sizes=(7, 3, 3),
                 patch_strides=(4, 2, 2),
                 patch_paddings=(2, 1, 1),
                 num_classes=10):
        super().__init__()
        self.num_stages = len(dims)
        in_chans = 3
        for i in range(self.num_stages):
            setattr(
                self, f'stage{i}',
                Stage(in_chans, dims[i], depths[i], heads[i], patch_sizes[i],
                      patch_strides[i], patch_paddings[i], with_cls_token[i]))
            in_chans = dims[i]
        self.norm = nn.LayerNorm(dims[-1], eps=1e-5)
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x):
        outs = []
        for i in range(self.num_stages):
            x, _ = getattr(self, f'stage{i}')(x)
            outs.append(x)
        return outs

    def logits(self, x):
        """The classifier: the last stage's cls token -> norm -> head."""
        for i in range(self.num_stages):
            x, cls_tokens = getattr(self, f'stage{i}')(x)
        return self.head(self.norm(cls_tokens).squeeze(1))


def randomise_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter and BN statistic a distinct random value.

    Unit LayerNorm weights, zero biases and fresh BN statistics would let a
    swapped or skipped tensor go unnoticed.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=gen)
            if name.endswith('running_var'):
                tensor.copy_(0.5 + noise.abs())
            elif 'norm' in name.split('.')[-2] or '.bn.' in name:
                # norm/bn weights near 1, biases near 0
                base = 1. if name.endswith('weight') else 0.
                tensor.copy_(base + 0.1 * noise)
            elif tensor.dim() == 1:  # biases
                tensor.copy_(0.1 * noise)
            else:  # conv / linear weights (and cls tokens): unit-gain scale
                tensor.copy_(noise / tensor[0].numel()**0.5)
    return model


# Official names to transformers names, transcribed from transformers'
# convert_cvt_original_pytorch_checkpoint_to_pytorch.py.
_TRANSFORMERS_BLOCK_NAMES = [
    ('attn.conv_proj_q.conv.',
     'attention.attention.convolution_projection_query.'
     'convolution_projection.convolution.'),
    ('attn.conv_proj_q.bn.',
     'attention.attention.convolution_projection_query.'
     'convolution_projection.normalization.'),
    ('attn.conv_proj_k.conv.',
     'attention.attention.convolution_projection_key.'
     'convolution_projection.convolution.'),
    ('attn.conv_proj_k.bn.', 'attention.attention.convolution_projection_key.'
     'convolution_projection.normalization.'),
    ('attn.conv_proj_v.conv.',
     'attention.attention.convolution_projection_value.'
     'convolution_projection.convolution.'),
    ('attn.conv_proj_v.bn.',
     'attention.attention.convolution_projection_value.'
     'convolution_projection.normalization.'),
    ('attn.proj_q.', 'attention.attention.projection_query.'),
    ('attn.proj_k.', 'attention.attention.projection_key.'),
    ('attn.proj_v.', 'attention.attention.projection_value.'),
    ('attn.proj.', 'attention.output.dense.'),
    ('mlp.fc1.', 'intermediate.dense.'),
    ('mlp.fc2.', 'output.dense.'),
    ('norm1.', 'layernorm_before.'),
    ('norm2.', 'layernorm_after.'),
]


def official_to_transformers(state_dict, prefix='cvt.'):
    """Rename an official state dict as ``CvtForImageClassification``
    holds it."""
    out = OrderedDict()
    for key, value in state_dict.items():
        if key.startswith('norm.'):
            out['layernorm.' + key[5:]] = value
            continue
        if key.startswith('head.'):
            out['classifier.' + key[5:]] = value
            continue
        stage, rest = key.split('.', 1)
        hf_stage = f'{prefix}encoder.stages.{stage[len("stage"):]}.'
        if rest == 'cls_token':
            out[hf_stage + 'cls_token'] = value
        elif rest.startswith('patch_embed.proj.'):
            out[hf_stage + 'embedding.convolution_embeddings.projection.' +
                rest[len('patch_embed.proj.'):]] = value
        elif rest.startswith('patch_embed.norm.'):
            out[hf_stage + 'embedding.convolution_embeddings.normalization.' +
                rest[len('patch_embed.norm.'):]] = value
        else:
            _, index, block_rest = rest.split('.', 2)
            for old, new in _TRANSFORMERS_BLOCK_NAMES:
                if block_rest.startswith(old):
                    out[f'{hf_stage}layers.{index}.{new}'
                        f'{block_rest[len(old):]}'] = value
                    break
            else:
                raise KeyError(key)
    return out
