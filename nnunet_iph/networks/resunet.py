"""ResUNet (Zhang, Liu & Wang 2018): pre-activation residual units in encoder and decoder."""

from __future__ import annotations

from torch import nn

from nnunet_iph.networks.base import SegmentationNetwork
from nnunet_iph.networks.decoders import UNetDecoder


class ResUNet(SegmentationNetwork):
    """Residual-unit encoder (``encoder='resunet'``: 64-128-256-512, one unit per stage) and a
    U-Net decoder whose blocks are residual units too."""

    default_encoder = "resunet"

    def build_decoder(self, encoder: nn.Module, num_classes: int, deep_supervision: bool) -> nn.Module:
        return UNetDecoder(encoder, num_classes, self.ops, deep_supervision, block="residual")
