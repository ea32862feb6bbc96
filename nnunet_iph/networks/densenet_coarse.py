"""DenseNet coarse model of the coarse-to-fine study: dense encoder, non-dense U-Net decoder."""

from __future__ import annotations

from torch import nn

from nnunet_iph.networks.base import SegmentationNetwork
from nnunet_iph.networks.decoders import UNetDecoder


class DenseNetCoarse(SegmentationNetwork):
    """Dense encoder (a dense block of 6 layers per stage: 5 x 6 with 5-stage plans; transitions
    norm + 1x1 conv + average pooling) with a plain U-Net decoder."""

    default_encoder = "dense"

    def build_decoder(self, encoder: nn.Module, num_classes: int, deep_supervision: bool) -> nn.Module:
        return UNetDecoder(encoder, num_classes, self.ops, deep_supervision)
