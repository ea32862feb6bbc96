"""Feature Pyramid Network (Lin et al. 2017) for segmentation."""

from __future__ import annotations

from typing import Any

from torch import nn

from nnunet_iph.networks.base import SegmentationNetwork
from nnunet_iph.networks.decoders import FPNDecoder, fpn_widths


class FPN(SegmentationNetwork):
    """:class:`~nnunet_iph.networks.decoders.FPNDecoder` on a VGG16 encoder by default.

    ``pyramid_channels`` (default 256 x width) and ``segmentation_channels`` (128 x width).
    """

    default_encoder = "vgg16"

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool = False,
                 pyramid_channels: int | None = None, segmentation_channels: int | None = None,
                 **kwargs: Any) -> None:
        width = kwargs.get("width", 1.0)
        default_p, default_s = fpn_widths(width)
        self.pyramid_channels = pyramid_channels or default_p
        self.segmentation_channels = segmentation_channels or default_s
        super().__init__(input_channels, num_classes, deep_supervision, **kwargs)

    def build_decoder(self, encoder: nn.Module, num_classes: int, deep_supervision: bool) -> nn.Module:
        return FPNDecoder(encoder, num_classes, self.ops, deep_supervision, self.pyramid_channels,
                          self.segmentation_channels)
