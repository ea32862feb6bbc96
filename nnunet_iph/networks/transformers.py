"""Transformer parts: ViT over bottleneck tokens (TransUNet) and N-D shifted-window blocks (Swin).

Feature maps stay channels-first ``(B, C, *spatial)`` between blocks like every conv part;
transformer blocks work on tokens internally. Linear layers get ViT's truncated-normal(0.02)
init here; nnU-Net's He init (``network.initialize``) only touches convolutions.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nnunet_iph.networks.blocks import ConvNormAct, Ops, per_axis, round_width
from nnunet_iph.networks.encoders import Encoder

_MASK_VALUE = float("-inf")  # exact zero weight (Swin's -100 leaves ~1e-44); every token sees itself


def heads_for(dim: int, head_dim: int = 32) -> int:
    """About ``dim / head_dim`` heads, adjusted down so they divide ``dim``."""
    heads = max(1, dim // head_dim)
    while dim % heads:
        heads -= 1
    return heads


def init_transformer(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class Attention(nn.Module):
    """Multi-head self-attention over the second-to-last axis; any leading batch axes."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        *lead, n, c = x.shape
        qkv = self.qkv(x).reshape(*lead, n, 3, self.heads, c // self.heads).movedim(-3, 0).transpose(-3, -2)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=bias)
        return self.proj(out.transpose(-3, -2).reshape(*lead, n, c))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: x + MSA(LN(x)), then x + MLP(LN(x)) (GELU, ``mlp_ratio``)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), bias)
        return x + self.mlp(self.norm2(x))


class ViTBottleneck(nn.Module):
    """TransUNet's transformer: 1x1 patch embedding of the CNN bottleneck, learned position
    embeddings (one per token of ``grid`` = patch size / total stride), ``depth`` pre-norm blocks,
    reshaped back and projected to the bottleneck width by a 3x3 conv ("conv_more")."""

    def __init__(self, ops: Ops, channels: int, grid: Sequence[int], dim: int = 768, depth: int = 12,
                 heads: int = 12, mlp_ratio: float = 4.0):
        super().__init__()
        self.grid = tuple(int(g) for g in grid)
        self.embed = ops.conv(channels, dim, 1, bias=True)
        self.position = nn.Parameter(torch.zeros(1, int(np.prod(self.grid)), dim))
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.out = ConvNormAct(ops, dim, channels, 3)
        self.apply(init_transformer)
        nn.init.trunc_normal_(self.position, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = tuple(x.shape[2:])
        if grid != self.grid:
            raise ValueError(
                f"TransUNet: the bottleneck token grid is {list(grid)} but the position embeddings were "
                f"sized for {list(self.grid)} (patch_size / total stride). Build the network with the "
                "patch size it is run on (nnU-Net always runs the plans' patch_size).")
        tokens = self.embed(x).flatten(2).transpose(1, 2) + self.position
        for block in self.blocks:
            tokens = block(tokens)
        tokens = self.norm(tokens).transpose(1, 2).reshape(x.shape[0], -1, *grid)
        return self.out(tokens)


class TransformerBottleneckEncoder(nn.Module):
    """A CNN encoder whose deepest stage output is passed through a :class:`ViTBottleneck`."""

    def __init__(self, cnn: nn.Module, vit: ViTBottleneck):
        super().__init__()
        self.cnn, self.vit = cnn, vit
        self.output_channels = cnn.output_channels
        self.strides, self.kernel_sizes, self.conv_op = cnn.strides, cnn.kernel_sizes, cnn.conv_op

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = self.cnn(x)
        return skips[:-1] + [self.vit(skips[-1])]


@lru_cache(maxsize=64)
def _relative_index(window: tuple[int, ...], table_window: tuple[int, ...]) -> torch.Tensor:
    """Index into a ``prod(2W-1)`` bias table for every token pair of a (possibly smaller) window."""
    coords = torch.stack(torch.meshgrid(*[torch.arange(w) for w in window], indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :]
    index = torch.zeros(rel.shape[1:], dtype=torch.long)
    for a, w_max in enumerate(table_window):
        index = index * (2 * w_max - 1) + rel[a] + w_max - 1
    return index


def _partition(x: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """``(B, *S, C)`` -> ``(B, n_windows, prod(window), C)``."""
    b, *size, c = x.shape
    d = len(size)
    shape = [b]
    for s, w in zip(size, window):
        shape += [s // w, w]
    x = x.view(*shape, c).permute(0, *range(1, 2 * d, 2), *range(2, 2 * d + 1, 2), 2 * d + 1)
    return x.reshape(b, -1, int(np.prod(window)), c)


def _merge(x: torch.Tensor, window: Sequence[int], size: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`_partition`."""
    b, c, d = x.shape[0], x.shape[-1], len(size)
    counts = [s // w for s, w in zip(size, window)]
    x = x.view(b, *counts, *window, c)
    order = [0]
    for a in range(d):
        order += [1 + a, 1 + d + a]
    return x.permute(*order, 2 * d + 1).reshape(b, *size, c)


@lru_cache(maxsize=64)
def _region_ids(padded: tuple[int, ...], size: tuple[int, ...], window: tuple[int, ...],
                shift: tuple[int, ...]) -> torch.Tensor:
    """Per-window region labels: tokens attend only within their label (Swin's shifted-window
    mask), and padding tokens get labels of their own so real tokens never attend to them."""
    ids = torch.zeros(padded, dtype=torch.long)
    for a, (p, w, s) in enumerate(zip(padded, window, shift)):
        label = torch.zeros(p, dtype=torch.long)
        if s:
            label[p - w:p - s], label[p - s:] = 1, 2
        ids = ids * 3 + label.view(*[-1 if i == a else 1 for i in range(len(padded))])
    pad = torch.zeros(padded, dtype=torch.bool)
    for a, (p, n) in enumerate(zip(padded, size)):
        index = [slice(None)] * len(padded)
        index[a] = slice(n, p)
        pad[tuple(index)] = True
    if any(shift):
        pad = torch.roll(pad, shifts=tuple(-s for s in shift), dims=tuple(range(len(padded))))
    ids = ids + pad.long() * 3 ** len(padded)
    return _partition(ids[None, ..., None], window)[0, ..., 0]  # (n_windows, N)


class SwinBlock(nn.Module):
    """Swin transformer block in 1D/2D/3D: (shifted) window attention with a relative position
    bias, then an MLP, both pre-norm and residual.

    Windows larger than the feature map shrink to it (and are then not shifted), as in Swin;
    feature maps are zero-padded to window multiples and padding tokens are masked out.
    """

    def __init__(self, dim: int, heads: int, window: Sequence[int], shifted: bool, mlp_ratio: float = 4.0):
        super().__init__()
        self.window, self.shifted = tuple(window), shifted
        self.block = TransformerBlock(dim, heads, mlp_ratio)
        self.bias_table = nn.Parameter(torch.zeros(int(np.prod([2 * w - 1 for w in self.window])), heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: channels-last ``(B, *S, C)``."""
        size = tuple(x.shape[1:-1])
        window = tuple(min(w, s) for w, s in zip(self.window, size))
        shift = tuple(w // 2 if self.shifted and s > w else 0 for w, s in zip(self.window, size))
        padded = tuple(math.ceil(s / w) * w for s, w in zip(size, window))
        attn_bias = self.bias_table[_relative_index(window, self.window).to(x.device)].permute(2, 0, 1)
        ids = _region_ids(padded, size, window, shift).to(x.device)
        if padded != size or any(shift):
            mask = torch.zeros(ids.shape + ids.shape[-1:], dtype=x.dtype, device=x.device)
            mask.masked_fill_(ids[:, :, None] != ids[:, None, :], _MASK_VALUE)
            attn_bias = attn_bias[None] + mask[:, None]  # (n_windows, heads, N, N)
        attn_bias = attn_bias.to(x.dtype)

        shortcut = x
        h = self.block.norm1(x)
        if padded != size:
            pads = []
            for s, p in zip(reversed(size), reversed(padded)):
                pads += [0, p - s]
            h = F.pad(h, [0, 0] + pads)
        dims = tuple(range(1, len(size) + 1))
        if any(shift):
            h = torch.roll(h, shifts=tuple(-s for s in shift), dims=dims)
        h = _merge(self.block.attn(_partition(h, window), attn_bias), window, padded)
        if any(shift):
            h = torch.roll(h, shifts=shift, dims=dims)
        h = h[(slice(None), *[slice(0, s) for s in size])]
        x = shortcut + h
        return x + self.block.mlp(self.block.norm2(x))


class SwinStage(nn.Module):
    """``depth`` Swin blocks alternating regular and shifted windows, channels-first in and out."""

    def __init__(self, dim: int, depth: int, window: Sequence[int], mlp_ratio: float = 4.0):
        super().__init__()
        heads = heads_for(dim)
        self.blocks = nn.ModuleList(SwinBlock(dim, heads, window, i % 2 == 1, mlp_ratio) for i in range(depth))
        self.apply(init_transformer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.movedim(1, -1)
        for block in self.blocks:
            x = block(x)
        return x.movedim(-1, 1).contiguous()


class PatchEmbed(nn.Module):
    """Swin's patch merging / embedding as a strided conv (kernel = stride: same as
    concatenating the stride's neighbours and projecting linearly), then LayerNorm."""

    def __init__(self, ops: Ops, cin: int, cout: int, stride: Sequence[int]):
        super().__init__()
        self.proj = ops.conv_op(cin, cout, tuple(stride), tuple(stride))
        self.norm = nn.LayerNorm(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).movedim(1, -1)).movedim(-1, 1)


def swin_widths(n_stages: int, first_swin_stage: int, embed_dim: int) -> list[int]:
    """Swin widths: ``embed_dim`` at the first Swin stage, doubling (capped at 8x: Swin-T's 768),
    conv stages before it at halving widths."""
    return [max(1, min(int(embed_dim * 2.0 ** (s - first_swin_stage)), 8 * embed_dim)) for s in range(n_stages)]


class SwinEncoder(Encoder):
    """Swin encoder: conv stages at the finest ``first_swin_stage`` resolutions (Swin-Unet starts
    at 1/4 with a 4x4 patch embedding; nnU-Net's plans also want full-resolution features), then
    per stage a patch embedding by the plans' stride and ``depth`` Swin blocks."""

    def __init__(self, input_channels: int, ops: Ops, strides, kernel_sizes, width: float = 1.0,
                 embed_dim: int = 96, depth: int = 2, window: int | Sequence[int] = 7,
                 first_swin_stage: int = 2, mlp_ratio: float = 4.0):
        super().__init__(ops, strides, kernel_sizes)
        n = len(self.strides)
        self.first_swin_stage = min(first_swin_stage, n - 1)
        window = per_axis(window, ops.dim, "window")
        self.output_channels = swin_widths(n, self.first_swin_stage, round_width(embed_dim * width, 8))
        cin = input_channels
        for s, (stride, kernel, cout) in enumerate(zip(self.strides, self.kernel_sizes, self.output_channels)):
            if s < self.first_swin_stage:
                self.stages.append(nn.Sequential(ConvNormAct(ops, cin, cout, kernel, stride),
                                                  ConvNormAct(ops, cout, cout, kernel)))
            else:
                self.stages.append(nn.Sequential(PatchEmbed(ops, cin, cout, stride),
                                                  SwinStage(cout, depth, window, mlp_ratio)))
            cin = cout
