"""Attention U-Net (Oktay et al. 2018): additive attention gates on the skip connections."""

from __future__ import annotations

from torch import nn

from nnunet_iph.networks.base import SegmentationNetwork
from nnunet_iph.networks.decoders import UNetDecoder


class AttentionUNet(SegmentationNetwork):
    """U-Net decoder whose skips are gated by :class:`~nnunet_iph.networks.decoders.AttentionGate`;
    VGG16 encoder by default."""

    default_encoder = "vgg16"

    def build_decoder(self, encoder: nn.Module, num_classes: int, deep_supervision: bool) -> nn.Module:
        return UNetDecoder(encoder, num_classes, self.ops, deep_supervision, attention=True)
