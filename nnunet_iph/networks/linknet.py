"""LinkNet (Chaurasia & Culurciello 2017): ResNet-18 encoder, decoder outputs added to the skips."""

from __future__ import annotations

from torch import nn

from nnunet_iph.networks.base import SegmentationNetwork
from nnunet_iph.networks.decoders import LinkNetDecoder


class LinkNet(SegmentationNetwork):
    """:class:`~nnunet_iph.networks.decoders.LinkNetDecoder` on a ResNet-18-style encoder by default."""

    default_encoder = "resnet"

    def build_decoder(self, encoder: nn.Module, num_classes: int, deep_supervision: bool) -> nn.Module:
        return LinkNetDecoder(encoder, num_classes, self.ops, deep_supervision)
