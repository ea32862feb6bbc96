"""Networks named in a plans file build through nnU-Net's own get_network_from_plans."""

from __future__ import annotations

import copy

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_iph.networks import NETWORKS
from tests.networks.conftest import SMALL_2D, SMALL_3D, deep_supervision_shapes, nnunet_plans

CLASS_PATHS = {name: f"{cls.__module__}.{cls.__qualname__}" for name, cls in NETWORKS.items()}


def test_class_paths_are_the_documented_ones():
    assert CLASS_PATHS["FPN"] == "nnunet_iph.networks.fpn.FPN"
    assert CLASS_PATHS["DenseNetCoarse"] == "nnunet_iph.networks.densenet_coarse.DenseNetCoarse"


@pytest.mark.parametrize("configuration", [SMALL_2D, SMALL_3D], ids=["2d", "3d"])
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_plans_configuration_naming_our_class_builds(name, configuration):
    """Swap network_class_name in nnU-Net's own arch_kwargs (plus ours: width, patch_size)."""
    config = copy.deepcopy(configuration)
    config["architecture"]["network_class_name"] = CLASS_PATHS[name]
    config["architecture"]["arch_kwargs"].update(width=0.125, patch_size=config["patch_size"])
    if name == "TransUNet":
        config["architecture"]["arch_kwargs"]["vit_depth"] = 1
    cm = PlansManager(nnunet_plans({"cfg": config})).get_configuration("cfg")
    assert cm.network_arch_class_name == CLASS_PATHS[name]
    net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                 cm.network_arch_init_kwargs_req_import, 1, 2, allow_init=True, deep_supervision=True)
    assert type(net) is NETWORKS[name]
    out = net(torch.randn(1, 1, *config["patch_size"]))
    assert [tuple(o.shape[2:]) for o in out] == deep_supervision_shapes(config)


def test_plain_encoder_uses_the_plans_widths():
    config = copy.deepcopy(SMALL_2D)
    config["architecture"]["network_class_name"] = CLASS_PATHS["UNet"]
    config["architecture"]["arch_kwargs"]["encoder"] = "plain"
    arch = config["architecture"]
    ours = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                  1, 2, deep_supervision=True)
    assert ours.encoder.output_channels == config["architecture"]["arch_kwargs"]["features_per_stage"]
    # U-Net decoder on nnU-Net's encoder == nnU-Net's PlainConvUNet, parameter for parameter
    import pydoc

    kw = dict(SMALL_2D["architecture"]["arch_kwargs"])
    for k in SMALL_2D["architecture"]["_kw_requires_import"]:
        kw[k] = pydoc.locate(kw[k]) if kw[k] else None
    reference = PlainConvUNet(1, num_classes=2, deep_supervision=True, **kw)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())
