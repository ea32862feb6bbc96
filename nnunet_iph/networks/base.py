"""Base class of all nnunet-iph networks: nnU-Net's constructor convention, encoder + decoder.

A network is built exactly like dynamic-network-architectures' ``PlainConvUNet``:
``cls(input_channels=, num_classes=, deep_supervision=, **arch_kwargs)`` with the plans'
``arch_kwargs`` (``conv_op``, ``strides``, ``kernel_sizes``, ``norm_op`` ...), so a plans file can
name it in ``network_class_name`` and nnU-Net's ``get_network_from_plans`` builds it. The plans'
PlainConvUNet-only keys are accepted too, so swapping ``network_class_name`` is enough.
"""

from __future__ import annotations

from typing import Any, Sequence, Type

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

from nnunet_iph.networks.blocks import Ops, check_spatial_size, conv_dim, init_weights, per_axis, per_stage
from nnunet_iph.networks.encoders import build_encoder

# arch_kwargs of nnU-Net's own networks: accepted so plans written for them build ours.
# features_per_stage / n_conv_per_stage / n_blocks_per_stage size encoder='plain' / 'resenc'.
PLANS_ENCODER_KEYS = ("features_per_stage", "n_conv_per_stage", "n_blocks_per_stage")
PLANS_IGNORED_KEYS = ("n_conv_per_stage_decoder", "nonlin_first", "block", "bottleneck_channels",
                      "stem_channels")

DEFAULT_STRIDES_PER_DIM = 5  # without plans: VGG16's depth, stride 2 between stages


class SegmentationNetwork(nn.Module):
    """Encoder (``self.encoder``) + decoder (``self.decoder``), logits out.

    Subclasses set ``default_encoder`` and implement :meth:`build_decoder` (and may wrap the
    encoder in :meth:`build_encoder`). Arguments:

    - ``conv_op``: ``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.Conv3d`` (1D/2D/3D).
    - ``strides``: per stage (the plans' ``strides`` = ``pool_op_kernel_sizes``); the number of
      stages and the deep-supervision scales follow them. Default: 5 stages, stride 2.
    - ``kernel_sizes``: per stage or one int (plans: ``[1, 3, 3]`` for anisotropic stages).
    - ``patch_size``: optional, checked against the total stride at construction (ValueError);
      required by TransUNet (position embeddings).
    - ``encoder``: a name from :data:`nnunet_iph.networks.encoders.ENCODERS`; ``width``: channel
      multiplier of the encoder and of decoders whose widths are not the encoder's.
    - ``norm_op``/``nonlin``/``dropout_op`` (+ kwargs), ``conv_bias``: from the plans; default
      nnU-Net's InstanceNorm + LeakyReLU.
    """

    default_encoder = "vgg16"

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool = False,
                 conv_op: Type[_ConvNd] = nn.Conv2d, strides: Sequence | None = None,
                 kernel_sizes: int | Sequence = 3, n_stages: int | None = None,
                 patch_size: Sequence[int] | None = None, encoder: str | None = None, width: float = 1.0,
                 conv_bias: bool = True, norm_op: Type[nn.Module] | None = None, norm_op_kwargs: dict | None = None,
                 dropout_op: Type[nn.Module] | None = None, dropout_op_kwargs: dict | None = None,
                 nonlin: Type[nn.Module] | None = None, nonlin_kwargs: dict | None = None,
                 **plans_kwargs: Any) -> None:
        super().__init__()
        unknown = set(plans_kwargs) - set(PLANS_ENCODER_KEYS) - set(PLANS_IGNORED_KEYS)
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected keyword arguments {sorted(unknown)}")
        if plans_kwargs.get("nonlin_first"):
            raise ValueError(f"{type(self).__name__} supports nonlin_first=False only")
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        dim = conv_dim(conv_op)
        if strides is None:
            strides = [1] + [2] * (DEFAULT_STRIDES_PER_DIM - 1) if n_stages is None else [1] + [2] * (n_stages - 1)
        n = len(strides)
        if n_stages is not None and n_stages != n:
            raise ValueError(f"n_stages={n_stages} but strides has {n} entries")
        if n < 2:
            raise ValueError(f"need at least 2 stages (one downsampling), got strides={list(strides)}")
        self.strides = per_stage(strides, n, dim, "strides")
        self.kernel_sizes = per_stage(kernel_sizes, n, dim, "kernel_sizes")
        self.patch_size = per_axis(patch_size, dim, "patch_size") if patch_size is not None else None
        if self.patch_size is not None:
            check_spatial_size(self.patch_size, self.strides, type(self).__name__)
        self.input_channels, self.num_classes, self.width = input_channels, num_classes, width
        self.ops = Ops.from_plans(conv_op, norm_op, norm_op_kwargs, nonlin, nonlin_kwargs, dropout_op,
                                  dropout_op_kwargs, conv_bias)
        self.encoder_name = encoder or self.default_encoder
        plans_encoder_kwargs = {k: plans_kwargs[k] for k in PLANS_ENCODER_KEYS if k in plans_kwargs}
        self.encoder = self.build_encoder(input_channels, plans_encoder_kwargs)
        self.decoder = self.build_decoder(self.encoder, num_classes, deep_supervision)

    def build_encoder(self, input_channels: int, plans_kwargs: dict) -> nn.Module:
        return build_encoder(self.encoder_name, input_channels, self.ops, self.strides, self.kernel_sizes,
                             self.width, **plans_kwargs)

    def build_decoder(self, encoder: nn.Module, num_classes: int, deep_supervision: bool) -> nn.Module:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        check_spatial_size(x.shape[2:], self.strides, type(self).__name__)
        return self.decoder(self.encoder(x))

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """nnU-Net applies this with ``network.apply`` (He init of convs, as PlainConvUNet)."""
        init_weights(module)
