"""Swin U-Net (Cao et al. 2021): shifted-window transformer encoder and decoder, in 2D and 3D."""

from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from nnunet_iph.networks.base import SegmentationNetwork
from nnunet_iph.networks.decoders import SwinDecoder
from nnunet_iph.networks.transformers import SwinEncoder


class SwinUNet(SegmentationNetwork):
    """Swin encoder + Swin decoder with skip connections.

    Stages finer than ``first_swin_stage`` (default 2, i.e. full and half resolution, where
    Swin-Unet has its 4x patch partition / final expansion) are conv blocks; from there on each
    stage is a patch embedding by the plans' stride and ``depth`` Swin blocks (regular + shifted
    windows of ``window`` tokens per axis; 2D and 3D window attention). Widths: ``embed_dim`` x
    width (96: Swin-T) at the first Swin stage, doubling up to 8x, 32-channel heads. Feature maps
    are padded to window multiples (padding masked). ``encoder`` may name a CNN encoder instead
    (e.g. ``'vgg16'``): then only the decoder has Swin blocks.
    """

    default_encoder = "swin"

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool = False,
                 embed_dim: int = 96, depth: int = 2, window: int | Sequence[int] = 7,
                 first_swin_stage: int = 2, mlp_ratio: float = 4.0, **kwargs: Any) -> None:
        self.embed_dim, self.depth, self.window = embed_dim, depth, window
        self.first_swin_stage, self.mlp_ratio = first_swin_stage, mlp_ratio
        super().__init__(input_channels, num_classes, deep_supervision, **kwargs)

    def build_encoder(self, input_channels: int, plans_kwargs: dict) -> nn.Module:
        if self.encoder_name != "swin":
            return super().build_encoder(input_channels, plans_kwargs)
        return SwinEncoder(input_channels, self.ops, self.strides, self.kernel_sizes, self.width,
                           self.embed_dim, self.depth, self.window, self.first_swin_stage, self.mlp_ratio)

    def build_decoder(self, encoder: nn.Module, num_classes: int, deep_supervision: bool) -> nn.Module:
        first = min(self.first_swin_stage, len(self.strides) - 1)
        return SwinDecoder(encoder, num_classes, self.ops, deep_supervision, self.depth, self.window, first,
                           self.mlp_ratio)
