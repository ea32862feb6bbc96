"""Decoders: U-Net (plain / residual units / attention gates), U-Net++, FPN, LinkNet.

A decoder takes the encoder's stage outputs (full resolution first, bottleneck last) and returns
logits. With ``deep_supervision`` it returns one logits map per encoder stage except the
bottleneck, full resolution first: exactly the scales nnU-Net derives from the plans
(``1 / cumprod(pool_op_kernel_sizes)[:-1]``), so nnU-Net's DeepSupervisionWrapper pairs them
with its downsampled targets. Segmentation layers are always built so that a checkpoint trained
with deep supervision loads into the inference network (nnU-Net builds that one without).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nnunet_iph.networks.blocks import (ConvNormAct, Ops, ResidualBlock, interpolate_to, per_axis, round_width,
                                     stacked_convs)


class Decoder(nn.Module):
    """Common part: the ``deep_supervision`` switch nnU-Net flips via ``network.decoder``."""

    def __init__(self, encoder: nn.Module, num_classes: int, ops: Ops, deep_supervision: bool):
        super().__init__()
        self.deep_supervision = deep_supervision
        self.num_classes = num_classes
        self.ops = ops
        self.channels = list(encoder.output_channels)
        self.strides = [tuple(s) for s in encoder.strides]
        self.kernel_sizes = [tuple(k) for k in encoder.kernel_sizes]
        self.n_stages = len(self.channels)
        if self.n_stages < 2:
            raise ValueError("a decoder needs an encoder with at least 2 stages (one downsampling)")

    def _seg(self, cin: int) -> nn.Module:
        return self.ops.conv(cin, self.num_classes, 1, bias=True)

    def _result(self, outputs: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        return outputs if self.deep_supervision else outputs[0]


class AttentionGate(nn.Module):
    """Additive attention gate of Oktay et al. 2018 on a skip connection.

    ``alpha = sigmoid(psi(relu(W_x x + W_g g)))`` with ``W_x`` a strided conv taking the skip ``x``
    to the resolution of the coarser gating signal ``g``; alpha is resampled (linearly) back to
    ``x`` and scales it, followed by a 1x1 conv + norm as in the paper's implementation.
    """

    def __init__(self, ops: Ops, skip_channels: int, gate_channels: int, inter_channels: int, stride):
        super().__init__()
        self.theta = ops.conv_op(skip_channels, inter_channels, tuple(stride), tuple(stride), bias=False)
        self.phi = ops.conv(gate_channels, inter_channels, 1, bias=True)
        self.psi = ops.conv(inter_channels, 1, 1, bias=True)
        self.out = nn.Sequential(ops.conv(skip_channels, skip_channels, 1), ops.norm(skip_channels))

    def coefficients(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """The attention map in [0, 1] at the skip's resolution (for inspection)."""
        alpha = torch.sigmoid(self.psi(F.relu(self.theta(x) + self.phi(g))))
        return interpolate_to(alpha, x.shape[2:])

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return self.out(x * self.coefficients(x, g))


class UNetDecoder(Decoder):
    """U-Net decoder: transposed-conv upsampling, concatenation with the skip, conv block.

    ``block='conv'``: ``n_conv`` conv-norm-act (U-Net); ``block='residual'``: one pre-activation
    residual unit (ResUNet). ``attention=True`` gates every skip with :class:`AttentionGate`
    (Attention U-Net), the gating signal being the decoder features one level below.
    """

    def __init__(self, encoder: nn.Module, num_classes: int, ops: Ops, deep_supervision: bool,
                 n_conv: int = 2, block: str = "conv", attention: bool = False):
        super().__init__(encoder, num_classes, ops, deep_supervision)
        if block not in ("conv", "residual"):
            raise ValueError(f"block must be 'conv' or 'residual', got {block!r}")
        self.transpconvs, self.stages, self.seg_layers = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        self.gates = nn.ModuleList() if attention else None
        below = self.channels[-1]
        for level in range(self.n_stages - 2, -1, -1):  # bottom-up order of computation
            skip, stride, kernel = self.channels[level], self.strides[level + 1], self.kernel_sizes[level]
            self.transpconvs.append(ops.transp_conv(below, skip, stride))
            if attention:
                self.gates.append(AttentionGate(ops, skip, below, max(1, skip // 2), stride))
            if block == "conv":
                self.stages.append(stacked_convs(ops, 2 * skip, skip, n_conv, kernel))
            else:
                self.stages.append(ResidualBlock(ops, 2 * skip, skip, kernel, preact=True))
            self.seg_layers.append(self._seg(skip))
            below = skip

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        x, outputs = skips[-1], []
        for s, (up, stage) in enumerate(zip(self.transpconvs, self.stages)):
            skip = skips[-(s + 2)]
            if self.gates is not None:
                skip = self.gates[s](skip, x)
            x = stage(torch.cat((up(x), skip), 1))
            if self.deep_supervision or s == len(self.stages) - 1:
                outputs.append(self.seg_layers[s](x))
        return self._result(outputs[::-1])


class UNetPlusPlusDecoder(Decoder):
    """U-Net++ (Zhou et al. 2018): nested, densely connected skip pathways.

    Node ``X[i][j] = conv(cat(X[i][0], ..., X[i][j-1], up(X[i+1][j-1])))``; ``X[i][0]`` are the
    encoder stages. Deep supervision reads the last node of each level (``X[i][n-1-i]``), one
    output per nnU-Net scale (the paper's variant supervises ``X[0][1..]`` at full resolution only).
    """

    def __init__(self, encoder: nn.Module, num_classes: int, ops: Ops, deep_supervision: bool,
                 n_conv: int = 2):
        super().__init__(encoder, num_classes, ops, deep_supervision)
        n, ch = self.n_stages, self.channels
        self.up, self.nodes = nn.ModuleDict(), nn.ModuleDict()
        for j in range(1, n):
            for i in range(n - j):
                self.up[f"{i}_{j}"] = ops.transp_conv(ch[i + 1], ch[i], self.strides[i + 1])
                self.nodes[f"{i}_{j}"] = stacked_convs(ops, ch[i] * (j + 1), ch[i], n_conv, self.kernel_sizes[i])
        self.seg_layers = nn.ModuleList(self._seg(ch[i]) for i in range(n - 1))

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        n = self.n_stages
        grid = {(i, 0): skips[i] for i in range(n)}
        for j in range(1, n):
            for i in range(n - j):
                inputs = [grid[(i, k)] for k in range(j)] + [self.up[f"{i}_{j}"](grid[(i + 1, j - 1)])]
                grid[(i, j)] = self.nodes[f"{i}_{j}"](torch.cat(inputs, 1))
        levels = range(n - 1) if self.deep_supervision else range(1)
        return self._result([self.seg_layers[i](grid[(i, n - 1 - i)]) for i in levels])


class FPNDecoder(Decoder):
    """Feature Pyramid Network (Lin et al. 2017) with a merged multi-scale segmentation head.

    Top-down pathway: ``P_top = lateral(C_top)``, ``P_i = lateral(C_i) + nearest_up(P_{i+1})``
    (1x1 laterals, ``pyramid_channels``). Head (panoptic-FPN / segmentation_models style): each
    ``P_i`` -> 3x3 conv-norm-act (``segmentation_channels``), (bi/tri)linearly upsampled to full
    resolution, summed, one more conv, 1x1 to logits. Deep-supervision outputs at coarser scales are
    1x1 convs on the per-level head features.
    """

    def __init__(self, encoder: nn.Module, num_classes: int, ops: Ops, deep_supervision: bool,
                 pyramid_channels: int = 256, segmentation_channels: int = 128):
        super().__init__(encoder, num_classes, ops, deep_supervision)
        p, s = pyramid_channels, segmentation_channels
        self.laterals = nn.ModuleList(ops.conv(c, p, 1, bias=True) for c in self.channels)
        self.level_heads = nn.ModuleList(ConvNormAct(ops, p, s, k) for k in self.kernel_sizes)
        self.merge = ConvNormAct(ops, s, s, self.kernel_sizes[0])
        self.seg_layers = nn.ModuleList(self._seg(s) for _ in range(self.n_stages - 1))

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        n = self.n_stages
        p = self.laterals[-1](skips[-1])
        features: list[torch.Tensor] = [None] * n  # type: ignore[list-item]
        features[-1] = self.level_heads[-1](p)
        for i in range(n - 2, -1, -1):
            p = self.laterals[i](skips[i]) + F.interpolate(p, size=skips[i].shape[2:], mode="nearest")
            features[i] = self.level_heads[i](p)
        full = skips[0].shape[2:]
        merged = features[0]
        for f in features[1:]:
            merged = merged + interpolate_to(f, full)
        outputs = [self.seg_layers[0](self.merge(merged))]
        if self.deep_supervision:
            outputs += [self.seg_layers[i](features[i]) for i in range(1, n - 1)]
        return self._result(outputs)


class LinkNetDecoder(Decoder):
    """LinkNet (Chaurasia & Culurciello 2017): decoder blocks 1x1 (m -> m/4), transposed conv
    (upsampling by the plans' stride), 1x1 (m/4 -> n), whose output is *added* to the encoder
    features of that level. The full-resolution output goes through one 3x3 conv before the 1x1
    classifier (LinkNet's final block, minus the upsampling the plans' stride-1 stage makes moot)."""

    def __init__(self, encoder: nn.Module, num_classes: int, ops: Ops, deep_supervision: bool):
        super().__init__(encoder, num_classes, ops, deep_supervision)
        self.blocks, self.seg_layers = nn.ModuleList(), nn.ModuleList()
        for level in range(self.n_stages - 2, -1, -1):
            m, out = self.channels[level + 1], self.channels[level]
            mid = max(1, m // 4)
            self.blocks.append(nn.Sequential(
                ConvNormAct(ops, m, mid, 1), ops.transp_conv(mid, mid, self.strides[level + 1]),
                ops.norm(mid), ops.act(), ConvNormAct(ops, mid, out, 1)))
        for level in range(self.n_stages - 1):
            c = self.channels[level]
            self.seg_layers.append(nn.Sequential(ConvNormAct(ops, c, c, self.kernel_sizes[0]), self._seg(c))
                                   if level == 0 else self._seg(c))

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        x, levels = skips[-1], []
        for s, block in enumerate(self.blocks):
            x = block(x) + skips[-(s + 2)]
            levels.append(x)
        levels = levels[::-1]  # full resolution first
        used = range(self.n_stages - 1) if self.deep_supervision else range(1)
        return self._result([self.seg_layers[i](levels[i]) for i in used])


def fpn_widths(width: float) -> tuple[int, int]:
    """Lin et al.'s 256 pyramid channels and a 128-channel head, scaled by ``width``."""
    return round_width(256 * width), round_width(128 * width)


class SwinDecoder(Decoder):
    """Swin-Unet decoder: patch expanding (transposed conv by the plans' stride), concatenation
    with the skip and a linear (1x1) fusion, then ``depth`` Swin blocks at levels from
    ``first_swin_level`` down; the finer levels (full resolution) use conv blocks instead."""

    def __init__(self, encoder: nn.Module, num_classes: int, ops: Ops, deep_supervision: bool,
                 depth: int = 2, window=7, first_swin_level: int = 2, mlp_ratio: float = 4.0):
        from nnunet_iph.networks.transformers import SwinStage

        super().__init__(encoder, num_classes, ops, deep_supervision)
        window = per_axis(window, ops.dim, "window")
        self.transpconvs, self.stages, self.seg_layers = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        below = self.channels[-1]
        for level in range(self.n_stages - 2, -1, -1):
            skip = self.channels[level]
            self.transpconvs.append(ops.transp_conv(below, skip, self.strides[level + 1]))
            if level >= first_swin_level:
                self.stages.append(nn.Sequential(ops.conv(2 * skip, skip, 1),
                                                 SwinStage(skip, depth, window, mlp_ratio)))
            else:
                self.stages.append(stacked_convs(ops, 2 * skip, skip, 2, self.kernel_sizes[level]))
            self.seg_layers.append(self._seg(skip))
            below = skip

    gates = None  # same forward as the U-Net decoder, without attention gates
    forward = UNetDecoder.forward
