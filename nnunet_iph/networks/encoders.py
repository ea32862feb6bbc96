"""Encoders: VGG16, nnU-Net's plain and residual encoders, ResNet-18 / ResUNet style, DenseNet.

Every encoder has one stage per entry of the plans' ``strides`` (stage ``s`` downsamples by
``strides[s]``, usually ``[1, 1]`` for stage 0) and returns the list of stage outputs, full
resolution first. It exposes ``output_channels``, ``strides``, ``kernel_sizes`` and ``conv_op``
(the interface of dynamic-network-architectures' encoders), so every decoder works on every
encoder and the deep-supervision outputs line up with nnU-Net's scales.

The reference architectures have a fixed depth (VGG16: 5 blocks); nnU-Net's plans choose the
depth from the patch size. The plans win: blocks beyond the reference depth repeat the deepest
reference block, a shallower plan keeps the first blocks (see docs/networks.md).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from dynamic_network_architectures.building_blocks.plain_conv_encoder import PlainConvEncoder
from dynamic_network_architectures.building_blocks.residual import BasicBlockD
from dynamic_network_architectures.building_blocks.residual_encoders import ResidualEncoder as DNAResidualEncoder
from torch import nn

from nnunet_iph.networks.blocks import NormActConv, ConvNormAct, Ops, ResidualBlock, round_width, stacked_convs

VGG16_WIDTHS = (64, 128, 256, 512, 512)
VGG16_CONVS = (2, 2, 3, 3, 3)
RESNET18_WIDTHS = (32, 64, 128, 256, 512)  # stage 0: full-resolution stem, then ResNet-18's 4 stages
RESNET18_BLOCKS = (1, 2, 2, 2, 2)
RESUNET_WIDTHS = (64, 128, 256, 512)  # Zhang et al. 2018: 64-128-256, bridge 512
DENSENET_LAYERS = 6
DENSENET_GROWTH = 32
DENSENET_BN_SIZE = 4
DENSENET_COMPRESSION = 0.5


def _reference(values: Sequence[int], stage: int) -> int:
    """The reference value for ``stage``, repeating the deepest one for deeper plans."""
    return values[min(stage, len(values) - 1)]


class Encoder(nn.Module):
    """Sequence of stages returning every stage's output (the skips), bottleneck last."""

    def __init__(self, ops: Ops, strides: Sequence[Sequence[int]], kernel_sizes: Sequence[Sequence[int]]):
        super().__init__()
        self.ops = ops
        self.conv_op = ops.conv_op
        self.strides = [tuple(s) for s in strides]
        self.kernel_sizes = [tuple(k) for k in kernel_sizes]
        self.output_channels: list[int] = []
        self.stages = nn.ModuleList()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class VGG16Encoder(Encoder):
    """VGG16's convolutional part: 5 blocks of 2-2-3-3-3 3x3 convs, 64-128-256-512-512 channels.

    Max pooling (kernel = stride) before every block whose plans stride is not 1, as VGG pools
    between blocks. ``width`` scales the channels (e.g. 0.25 for CPU demos).
    """

    def __init__(self, input_channels: int, ops: Ops, strides, kernel_sizes, width: float = 1.0):
        super().__init__(ops, strides, kernel_sizes)
        cin = input_channels
        for s, (stride, kernel) in enumerate(zip(self.strides, self.kernel_sizes)):
            cout = round_width(_reference(VGG16_WIDTHS, s) * width)
            self.stages.append(nn.Sequential(
                ops.pool("max", stride), stacked_convs(ops, cin, cout, _reference(VGG16_CONVS, s), kernel)))
            self.output_channels.append(cout)
            cin = cout


class ResNetEncoder(Encoder):
    """Residual encoder: a full-resolution stem stage, then stages of basic residual blocks.

    Default layout is ResNet-18's (2 blocks per stage, 64-128-256-512, strided first block),
    the LinkNet encoder; ``preact=True, blocks=(1,), widths=RESUNET_WIDTHS`` gives ResUNet's
    pre-activation residual units.
    """

    def __init__(self, input_channels: int, ops: Ops, strides, kernel_sizes, width: float = 1.0,
                 widths: Sequence[int] = RESNET18_WIDTHS, blocks: Sequence[int] = RESNET18_BLOCKS,
                 preact: bool = False):
        super().__init__(ops, strides, kernel_sizes)
        cin = input_channels
        for s, (stride, kernel) in enumerate(zip(self.strides, self.kernel_sizes)):
            cout = round_width(_reference(widths, s) * width)
            n_blocks = _reference(blocks, s)
            if s == 0:
                layers: list[nn.Module] = [ConvNormAct(ops, cin, cout, kernel, stride)]
                layers += [ResidualBlock(ops, cout, cout, kernel, preact=preact) for _ in range(n_blocks)]
            else:
                layers = [ResidualBlock(ops, cin, cout, kernel, stride, preact=preact)]
                layers += [ResidualBlock(ops, cout, cout, kernel, preact=preact) for _ in range(n_blocks - 1)]
            if preact and s == len(self.strides) - 1:
                layers += [ops.norm(cout), ops.act()]  # pre-activation nets end on norm-act
            self.stages.append(nn.Sequential(*layers))
            self.output_channels.append(cout)
            cin = cout


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (bottleneck to 4k) then BN-ReLU-3x3 conv (k new channels), concatenated."""

    def __init__(self, ops: Ops, cin: int, growth: int, kernel: Sequence[int]):
        super().__init__()
        self.body = nn.Sequential(NormActConv(ops, cin, DENSENET_BN_SIZE * growth, 1),
                                  NormActConv(ops, DENSENET_BN_SIZE * growth, growth, kernel))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], 1)


class DenseEncoder(Encoder):
    """DenseNet encoder: a dense block of ``layers`` dense layers per stage (5 x 6 for the
    coarse model when the plans have 5 stages), transitions of norm, 1x1 conv (compression 0.5)
    and average pooling by the plans' stride between blocks; a 3x3 stem conv to 2k channels."""

    def __init__(self, input_channels: int, ops: Ops, strides, kernel_sizes, width: float = 1.0,
                 layers: int = DENSENET_LAYERS, growth: int = DENSENET_GROWTH):
        super().__init__(ops, strides, kernel_sizes)
        growth = round_width(growth * width)
        cin = input_channels
        for s, (stride, kernel) in enumerate(zip(self.strides, self.kernel_sizes)):
            if s == 0:
                head: list[nn.Module] = [ConvNormAct(ops, cin, 2 * growth, kernel, stride)]
                cin = 2 * growth
            else:
                cout = max(1, int(cin * DENSENET_COMPRESSION))
                head = [ops.norm(cin), ops.conv(cin, cout, 1), ops.pool("avg", stride)]
                cin = cout
            block = []
            for _ in range(layers):
                block.append(DenseLayer(ops, cin, growth, kernel))
                cin += growth
            self.stages.append(nn.Sequential(*head, *block))
            self.output_channels.append(cin)


def _plain(input_channels, ops, strides, kernel_sizes, width=1.0, features_per_stage=None,
           n_conv_per_stage=None, **_) -> PlainConvEncoder:
    """nnU-Net's own PlainConvEncoder with the plans' features and convs per stage."""
    n = len(strides)
    features = _plans_features(features_per_stage, n, width)
    convs = n_conv_per_stage if n_conv_per_stage is not None else 2
    return PlainConvEncoder(input_channels, n, features, ops.conv_op, kernel_sizes, strides, convs,
                            ops.conv_bias, ops.norm_op, ops.norm_op_kwargs, ops.dropout_op,
                            ops.dropout_op_kwargs, ops.nonlin, ops.nonlin_kwargs, return_skips=True)


def _resenc(input_channels, ops, strides, kernel_sizes, width=1.0, features_per_stage=None,
            n_blocks_per_stage=None, **_) -> DNAResidualEncoder:
    """nnU-Net's ResidualEncoder (the ResEnc presets' encoder)."""
    n = len(strides)
    features = _plans_features(features_per_stage, n, width)
    blocks = n_blocks_per_stage if n_blocks_per_stage is not None else [_reference((1, 3, 4, 6), s) for s in range(n)]
    return DNAResidualEncoder(input_channels, n, features, ops.conv_op, kernel_sizes, strides, blocks,
                              ops.conv_bias, ops.norm_op, ops.norm_op_kwargs, ops.dropout_op,
                              ops.dropout_op_kwargs, ops.nonlin, ops.nonlin_kwargs, BasicBlockD,
                              return_skips=True, disable_default_stem=False)


def _swin(input_channels, ops, strides, kernel_sizes, width=1.0) -> nn.Module:
    from nnunet_iph.networks.transformers import SwinEncoder

    return SwinEncoder(input_channels, ops, strides, kernel_sizes, width)


def _vnet(input_channels, ops, strides, kernel_sizes, width=1.0) -> nn.Module:
    from nnunet_iph.networks.vnet import VNetEncoder

    return VNetEncoder(input_channels, ops, strides, kernel_sizes, width)


def _plans_features(features_per_stage, n: int, width: float) -> list[int]:
    if features_per_stage is None:
        features_per_stage = [min(32 * 2 ** s, 512) for s in range(n)]
    elif isinstance(features_per_stage, int):
        features_per_stage = [features_per_stage] * n
    if len(features_per_stage) != n:
        raise ValueError(f"features_per_stage has {len(features_per_stage)} entries, expected {n}")
    return [round_width(f * width) for f in features_per_stage]


ENCODERS: dict[str, Callable[..., nn.Module]] = {
    "vgg16": lambda i, o, s, k, width=1.0, **_: VGG16Encoder(i, o, s, k, width),
    "plain": _plain,
    "resenc": _resenc,
    "resnet": lambda i, o, s, k, width=1.0, **_: ResNetEncoder(i, o, s, k, width),
    "resunet": lambda i, o, s, k, width=1.0, **_: ResNetEncoder(i, o, s, k, width, RESUNET_WIDTHS, (1,), True),
    "dense": lambda i, o, s, k, width=1.0, **_: DenseEncoder(i, o, s, k, width),
    "swin": lambda i, o, s, k, width=1.0, **_: _swin(i, o, s, k, width),
    "vnet": lambda i, o, s, k, width=1.0, **_: _vnet(i, o, s, k, width),
}
"""Encoder names accepted by every network's ``encoder`` argument.

``vgg16`` (the reference study's backbone), ``plain`` / ``resenc`` (nnU-Net's PlainConvEncoder /
ResidualEncoder sized by the plans' ``features_per_stage``, ``n_conv_per_stage`` /
``n_blocks_per_stage``), ``resnet`` (ResNet-18 layout), ``resunet`` (pre-activation residual
units), ``dense`` (DenseNet, 6 layers per block), ``swin`` (Swin transformer, Swin U-Net's default), ``vnet``
(V-Net's residual 5x5(x5) stages with strided-conv down-sampling)."""


def build_encoder(name: str, input_channels: int, ops: Ops, strides, kernel_sizes, width: float = 1.0,
                  **plans_kwargs) -> nn.Module:
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; choose one of {sorted(ENCODERS)}")
    return ENCODERS[name](input_channels, ops, strides, kernel_sizes, width=width, **plans_kwargs)
