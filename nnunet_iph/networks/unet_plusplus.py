"""U-Net++ (Zhou et al. 2018): nested, dense skip pathways."""

from __future__ import annotations

from torch import nn

from nnunet_iph.networks.base import SegmentationNetwork
from nnunet_iph.networks.decoders import UNetPlusPlusDecoder


class UNetPlusPlus(SegmentationNetwork):
    """:class:`~nnunet_iph.networks.decoders.UNetPlusPlusDecoder` on a VGG16 encoder by default."""

    default_encoder = "vgg16"

    def build_decoder(self, encoder: nn.Module, num_classes: int, deep_supervision: bool) -> nn.Module:
        return UNetPlusPlusDecoder(encoder, num_classes, self.ops, deep_supervision)
