"""One trainer per reference architecture: focal + Dice loss, nnU-Net's optimiser and schedule.

Each trainer only replaces ``build_network_architecture``: the network comes from
:mod:`nnunet_iph.networks`, sized by the plans configuration (``conv_op``, ``strides``,
``kernel_sizes``, norm / nonlinearity and ``patch_size``). Network arguments the trainer fixes
(its name says which, e.g. the encoder) win; any other argument of the network class (``width``,
``vit_depth`` ...) can be set per configuration in the plans' ``arch_kwargs``.
Short schedules come by name (``nnUNetTrainerFPN_2ep_5it``), paper hyperparameters by the
``...Adam`` variants in :mod:`nnunet_iph.trainers.hyperparameters`.
"""

from __future__ import annotations

import inspect
from typing import Any

from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from nnunet_iph.networks import (AttentionUNet, DenseNetCoarse, FPN, LinkNet, ResUNet, SwinUNet, TransUNet, UNet,
                                 UNetPlusPlus, VNet)
from nnunet_iph.networks.base import PLANS_ENCODER_KEYS, PLANS_IGNORED_KEYS, SegmentationNetwork
from nnunet_iph.trainers.focal_dice import nnUNetTrainerFocalDice


def accepted_arguments(network: type[SegmentationNetwork]) -> set[str]:
    """Keyword arguments ``network`` takes (its own and inherited ones, plus nnU-Net's plans keys)."""
    names = set(PLANS_ENCODER_KEYS) | set(PLANS_IGNORED_KEYS)
    for cls in network.__mro__:
        if isinstance(cls, type) and issubclass(cls, SegmentationNetwork):
            names |= {p.name for p in inspect.signature(cls.__init__).parameters.values()
                      if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names - {"self", "input_channels", "num_classes", "deep_supervision"}


def network_kwargs_from_plans(network: type[SegmentationNetwork], configuration_manager: ConfigurationManager,
                              fixed: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """arch_kwargs for ``network``: the configuration's (those it accepts), its patch size, ``fixed``."""
    accepted = accepted_arguments(network)
    plans_kwargs = dict(configuration_manager.network_arch_init_kwargs)
    kwargs = {k: v for k, v in plans_kwargs.items() if k in accepted}
    kwargs["patch_size"] = list(configuration_manager.patch_size)
    kwargs.update(fixed)
    requires_import = [k for k in configuration_manager.network_arch_init_kwargs_req_import if k in kwargs]
    return kwargs, requires_import


def build_network(network: type[SegmentationNetwork], configuration_manager: ConfigurationManager,
                  num_input_channels: int, num_output_channels: int, enable_deep_supervision: bool = True,
                  **fixed: Any) -> nn.Module:
    """Build ``network`` from a plans configuration through nnU-Net's own ``get_network_from_plans``
    (so the trainer and a plans file naming the class build identical, identically initialised nets)."""
    kwargs, requires_import = network_kwargs_from_plans(network, configuration_manager, fixed)
    return get_network_from_plans(f"{network.__module__}.{network.__qualname__}", kwargs, requires_import,
                                  num_input_channels, num_output_channels, allow_init=True,
                                  deep_supervision=enable_deep_supervision)


def network_builder(network: type[SegmentationNetwork], **fixed: Any) -> staticmethod:
    """A ``build_network_architecture`` staticmethod (nnU-Net 2.8 signature) building ``network``."""

    def build_network_architecture(plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        return build_network(network, configuration_manager, num_input_channels, num_output_channels,
                             enable_deep_supervision, **fixed)

    build_network_architecture.network_class = network  # type: ignore[attr-defined]
    build_network_architecture.fixed_kwargs = dict(fixed)  # type: ignore[attr-defined]
    return staticmethod(build_network_architecture)


# --- the reference studies' architectures (MIDL study: VGG16 backbone everywhere) -------------

class nnUNetTrainerVGG16UNet(nnUNetTrainerFocalDice):
    """U-Net with a VGG16 encoder (the study's baseline)."""

    build_network_architecture = network_builder(UNet, encoder="vgg16")


class nnUNetTrainerAttentionUNet(nnUNetTrainerFocalDice):
    """Attention U-Net (additive attention gates) with a VGG16 encoder."""

    build_network_architecture = network_builder(AttentionUNet, encoder="vgg16")


class nnUNetTrainerFPN(nnUNetTrainerFocalDice):
    """FPN (top-down pathway, lateral connections, merged head) with a VGG16 encoder."""

    build_network_architecture = network_builder(FPN, encoder="vgg16")


class nnUNetTrainerTransUNet(nnUNetTrainerFocalDice):
    """TransUNet (ViT-B over the bottleneck tokens) with a VGG16 CNN encoder."""

    build_network_architecture = network_builder(TransUNet, encoder="vgg16")


class nnUNetTrainerSwinUNet(nnUNetTrainerFocalDice):
    """Swin U-Net: Swin-T-sized shifted-window encoder and decoder."""

    build_network_architecture = network_builder(SwinUNet, encoder="swin")


# --- PhysioNet study ----------------------------------------------------------------------------

class nnUNetTrainerUNetPlusPlus(nnUNetTrainerFocalDice):
    """U-Net++ (nested dense skips) with a VGG16 encoder."""

    build_network_architecture = network_builder(UNetPlusPlus, encoder="vgg16")


class nnUNetTrainerResUNet(nnUNetTrainerFocalDice):
    """ResUNet: residual units in encoder and decoder."""

    build_network_architecture = network_builder(ResUNet, encoder="resunet")


class nnUNetTrainerLinkNet(nnUNetTrainerFocalDice):
    """LinkNet: ResNet-18-style encoder, additive decoder skips."""

    build_network_architecture = network_builder(LinkNet, encoder="resnet")


# --- DeepBleed (MISTIE II/III) --------------------------------------------------------------------

class nnUNetTrainerVNet(nnUNetTrainerFocalDice):
    """V-Net (Milletari 2016; DeepBleed's network): residual 5x5(x5) stages, PReLU, strided convs."""

    build_network_architecture = network_builder(VNet, encoder="vnet")


# --- coarse-to-fine study -----------------------------------------------------------------------

class nnUNetTrainerDenseNetCoarse(nnUNetTrainerFocalDice):
    """DenseNet coarse model (dense encoder, plain U-Net decoder): the cascade's coarse 2D stage."""

    build_network_architecture = network_builder(DenseNetCoarse, encoder="dense")


# --- encoder variants: nnU-Net's own encoder for the VGG16 defaults, VGG16 for the others ---------

class nnUNetTrainerAttentionUNetPlainEnc(nnUNetTrainerFocalDice):
    """Attention U-Net on nnU-Net's PlainConvEncoder (widths and convs from the plans)."""

    build_network_architecture = network_builder(AttentionUNet, encoder="plain")


class nnUNetTrainerFPNPlainEnc(nnUNetTrainerFocalDice):
    """FPN on nnU-Net's PlainConvEncoder."""

    build_network_architecture = network_builder(FPN, encoder="plain")


class nnUNetTrainerTransUNetPlainEnc(nnUNetTrainerFocalDice):
    """TransUNet on nnU-Net's PlainConvEncoder."""

    build_network_architecture = network_builder(TransUNet, encoder="plain")


class nnUNetTrainerUNetPlusPlusPlainEnc(nnUNetTrainerFocalDice):
    """U-Net++ on nnU-Net's PlainConvEncoder."""

    build_network_architecture = network_builder(UNetPlusPlus, encoder="plain")


class nnUNetTrainerSwinUNetVGG16(nnUNetTrainerFocalDice):
    """Swin U-Net decoder on a VGG16 encoder ("all architectures used a VGG16 backbone")."""

    build_network_architecture = network_builder(SwinUNet, encoder="vgg16")


class nnUNetTrainerResUNetVGG16(nnUNetTrainerFocalDice):
    """ResUNet's residual decoder on a VGG16 encoder."""

    build_network_architecture = network_builder(ResUNet, encoder="vgg16")


class nnUNetTrainerLinkNetVGG16(nnUNetTrainerFocalDice):
    """LinkNet decoder on a VGG16 encoder."""

    build_network_architecture = network_builder(LinkNet, encoder="vgg16")
