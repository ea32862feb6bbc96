"""TransUNet (Chen et al. 2021): CNN encoder, ViT over the bottleneck tokens, U-Net decoder."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from nnunet_iph.networks.base import SegmentationNetwork
from nnunet_iph.networks.blocks import cumulative_strides, round_width
from nnunet_iph.networks.decoders import UNetDecoder
from nnunet_iph.networks.transformers import TransformerBottleneckEncoder, ViTBottleneck


class TransUNet(SegmentationNetwork):
    """VGG16 encoder (the study's backbone; TransUNet's own is ResNet-50) whose bottleneck feature
    map is tokenised (1x1 patches), given learned position embeddings sized from
    ``patch_size / total stride``, passed through ``vit_depth`` transformer blocks and decoded by a
    U-Net decoder. ``patch_size`` is required. Defaults are ViT-B (768 x width wide, 12 layers,
    12 heads, MLP ratio 4).
    """

    default_encoder = "vgg16"

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool = False,
                 vit_dim: int | None = None, vit_depth: int = 12, vit_heads: int = 12,
                 mlp_ratio: float = 4.0, **kwargs: Any) -> None:
        if kwargs.get("patch_size") is None:
            raise ValueError("TransUNet needs patch_size (its position embeddings have one entry per "
                             "bottleneck token): add the plans' patch_size to arch_kwargs")
        self.vit_dim = vit_dim or round_width(768 * kwargs.get("width", 1.0), vit_heads)
        self.vit_depth, self.vit_heads, self.mlp_ratio = vit_depth, vit_heads, mlp_ratio
        super().__init__(input_channels, num_classes, deep_supervision, **kwargs)

    def build_encoder(self, input_channels: int, plans_kwargs: dict) -> nn.Module:
        cnn = super().build_encoder(input_channels, plans_kwargs)
        grid = np.array(self.patch_size) // np.array(cumulative_strides(self.strides)[-1])
        vit = ViTBottleneck(self.ops, cnn.output_channels[-1], tuple(int(g) for g in grid), self.vit_dim,
                            self.vit_depth, self.vit_heads, self.mlp_ratio)
        return TransformerBottleneckEncoder(cnn, vit)

    def build_decoder(self, encoder: nn.Module, num_classes: int, deep_supervision: bool) -> nn.Module:
        return UNetDecoder(encoder, num_classes, self.ops, deep_supervision)
