"""U-Net with a VGG16 encoder: the reference study's baseline (Ronneberger et al. 2015)."""

from __future__ import annotations

from torch import nn

from nnunet_iph.networks.base import SegmentationNetwork
from nnunet_iph.networks.decoders import UNetDecoder


class UNet(SegmentationNetwork):
    """U-Net decoder (transposed conv, concatenated skip, 2 conv-norm-act) on any encoder;
    VGG16 by default (``nnUNetTrainerVGG16UNet``)."""

    default_encoder = "vgg16"

    def build_decoder(self, encoder: nn.Module, num_classes: int, deep_supervision: bool) -> nn.Module:
        return UNetDecoder(encoder, num_classes, self.ops, deep_supervision)
