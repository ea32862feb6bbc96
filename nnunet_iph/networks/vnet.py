"""V-Net (Milletari et al. 2016), the network of DeepBleed (Sharrock et al. 2021, MISTIE II/III).

What makes it a V-Net rather than a U-Net: 5x5(x5) convolutions, every stage a *residual* function
(the stage input is added to its conv stack's output), PReLU activations, and down-sampling by
strided 2x2(x2) convolutions instead of pooling; 1-2-3-3-3 convolutions per encoder stage, the
decoder mirroring them. Adapted to nnU-Net's plans: the number of stages and the per-axis strides
come from the plans (``[1, 2, 2]`` stages stay anisotropic, axes whose plans kernel is 1 keep a
kernel of 1), the plans' normalisation is used (the 2016 paper had none; DeepBleed's implementation
adds batch norm), a 1x1 projection replaces the paper's channel replication of the input (so any
number of input channels works), and deep supervision returns nnU-Net's scales.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from nnunet_iph.networks.base import SegmentationNetwork
from nnunet_iph.networks.blocks import Ops, round_width
from nnunet_iph.networks.decoders import Decoder
from nnunet_iph.networks.encoders import Encoder, _reference

VNET_WIDTHS = (16, 32, 64, 128, 256)  # doubling per stage; deeper plans repeat the last width
VNET_CONVS = (1, 2, 3, 3, 3)
VNET_KERNEL = 5


def vnet_kernel(plans_kernel: Sequence[int]) -> tuple[int, ...]:
    """5 along every axis the plans convolve over, 1 where the plans' kernel is 1."""
    return tuple(VNET_KERNEL if k > 1 else 1 for k in plans_kernel)


class ResidualStage(nn.Module):
    """``n`` conv-norm-PReLU layers whose output is added to a residual (then PReLU).

    The residual is the stage input (projected by a 1x1 conv when the channel count changes), or,
    with ``external_residual``, a tensor passed to :meth:`forward` (the decoder's up-convolution).
    """

    def __init__(self, ops: Ops, cin: int, cout: int, n: int, kernel: Sequence[int],
                 external_residual: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(n):
            layers += [ops.conv(cin if i == 0 else cout, cout, kernel), ops.norm(cout)]
            if i < n - 1:
                layers.append(nn.PReLU(cout))
        self.body = nn.Sequential(*layers)
        self.shortcut = None if external_residual else nn.Identity() if cin == cout else ops.conv(cin, cout, 1)
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if (residual is None) != (self.shortcut is not None):
            raise ValueError("pass the residual exactly when the stage was built with external_residual")
        return self.act(self.body(x) + (self.shortcut(x) if residual is None else residual))


def _resample(ops: Ops, cin: int, cout: int, stride: Sequence[int], up: bool) -> nn.Module:
    """Strided 2x2(x2) conv down (or transposed conv up) by ``stride``, then norm and PReLU."""
    conv = ops.transp_conv(cin, cout, stride) if up else ops.conv_op(cin, cout, tuple(stride), tuple(stride),
                                                                      bias=ops.conv_bias)
    return nn.Sequential(conv, ops.norm(cout), nn.PReLU(cout))


class VNetEncoder(Encoder):
    """Stage 0 at full resolution; every later stage down-samples by a strided conv, then a
    residual stack of 5x5(x5) convs. ``width`` scales the 16-32-64-128-256 channels."""

    def __init__(self, input_channels: int, ops: Ops, strides, kernel_sizes, width: float = 1.0):
        super().__init__(ops, strides, kernel_sizes)
        cin = input_channels
        for s, (stride, kernel) in enumerate(zip(self.strides, self.kernel_sizes)):
            cout = round_width(_reference(VNET_WIDTHS, s) * width)
            n_conv = _reference(VNET_CONVS, s)
            if s == 0 and all(v == 1 for v in stride):
                self.stages.append(ResidualStage(ops, cin, cout, n_conv, vnet_kernel(kernel)))
            else:
                self.stages.append(nn.Sequential(_resample(ops, cin, cout, stride, up=False),
                                                 ResidualStage(ops, cout, cout, n_conv, vnet_kernel(kernel))))
            self.output_channels.append(cout)
            cin = cout


class VNetDecoder(Decoder):
    """Transposed conv up by the encoder's stride, concatenation with the skip, a residual stack of
    as many convs as the encoder stage at that level, the up-conv output as the residual."""

    def __init__(self, encoder: nn.Module, num_classes: int, ops: Ops, deep_supervision: bool):
        super().__init__(encoder, num_classes, ops, deep_supervision)
        self.ups, self.stages, self.seg_layers = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        below = self.channels[-1]
        for level in range(self.n_stages - 2, -1, -1):
            skip = self.channels[level]
            self.ups.append(_resample(ops, below, skip, self.strides[level + 1], up=True))
            self.stages.append(ResidualStage(ops, 2 * skip, skip, _reference(VNET_CONVS, level),
                                             vnet_kernel(self.kernel_sizes[level]), external_residual=True))
            self.seg_layers.append(self._seg(skip))
            below = skip

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        x, outputs = skips[-1], []
        for s, (up, stage) in enumerate(zip(self.ups, self.stages)):
            u = up(x)
            x = stage(torch.cat((u, skips[-(s + 2)]), 1), residual=u)
            if self.deep_supervision or s == len(self.stages) - 1:
                outputs.append(self.seg_layers[s](x))
        return self._result(outputs[::-1])


class VNet(SegmentationNetwork):
    """V-Net: :class:`VNetEncoder` + :class:`VNetDecoder` (``nnUNetTrainerVNet``)."""

    default_encoder = "vnet"

    def build_decoder(self, encoder: nn.Module, num_classes: int, deep_supervision: bool) -> nn.Module:
        return VNetDecoder(encoder, num_classes, self.ops, deep_supervision)
