"""Every network in 1D/2D/3D on nnU-Net-shaped patch sizes: outputs, deep supervision, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nnunet_iph.networks import ENCODERS, NETWORKS
from tests.networks.conftest import (LARGE_2D, LARGE_3D, SMALL_2D, SMALL_3D, assert_finite, deep_supervision_shapes,
                                     resolved_arch_kwargs)

WIDTH = 1 / 8
SMALL_VIT = {"vit_depth": 1}  # TransUNet: keep one transformer layer in unit tests


def build(name: str, configuration: dict, deep_supervision: bool = True, width: float = WIDTH, **extra) -> nn.Module:
    kwargs = {**resolved_arch_kwargs(configuration), "patch_size": configuration["patch_size"], "width": width,
              **extra}
    if name == "TransUNet":
        kwargs = {**SMALL_VIT, **kwargs}
    net = NETWORKS[name](input_channels=1, num_classes=3, deep_supervision=deep_supervision, **kwargs)
    net.apply(net.initialize)
    return net


def run_forward_backward(net: nn.Module, configuration: dict, batch: int = 2):
    torch.manual_seed(0)
    x = torch.randn(batch, 1, *configuration["patch_size"])
    out = net(x)
    outputs = out if isinstance(out, list) else [out]
    loss = sum(o.float().square().mean() for o in outputs)
    loss.backward()
    return out


@pytest.mark.parametrize("configuration", [SMALL_2D, SMALL_3D], ids=["2d", "3d"])
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_deep_supervision_outputs_match_nnunet_scales(name, configuration):
    net = build(name, configuration)
    out = run_forward_backward(net, configuration)
    expected = deep_supervision_shapes(configuration)
    n_stages = len(configuration["architecture"]["arch_kwargs"]["strides"])
    assert isinstance(out, list) and len(out) == len(expected) == n_stages - 1
    assert [tuple(o.shape[2:]) for o in out] == expected  # full resolution first, then nnU-Net's scales
    assert all(o.shape[:2] == (2, 3) for o in out)
    assert_finite(out)
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0

    net.decoder.deep_supervision = False  # what nnU-Net's set_deep_supervision_enabled does
    with torch.no_grad():
        single = net(torch.randn(1, 1, *configuration["patch_size"]))
    assert isinstance(single, torch.Tensor) and tuple(single.shape) == (1, 3, *configuration["patch_size"])


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_checkpoint_with_deep_supervision_loads_into_inference_network(name):
    trained = build(name, SMALL_2D, deep_supervision=True)
    inference = build(name, SMALL_2D, deep_supervision=False)
    inference.load_state_dict(trained.state_dict())  # nnU-Net's predictor builds without deep supervision
    trained.eval(), inference.eval()
    x = torch.randn(1, 1, *SMALL_2D["patch_size"])
    with torch.no_grad():
        assert torch.allclose(trained(x)[0], inference(x), atol=1e-5)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_1d(name):
    net = NETWORKS[name](1, 2, True, conv_op=nn.Conv1d, strides=[1, 2, 2, 2], patch_size=[64], width=WIDTH,
                         **(SMALL_VIT if name == "TransUNet" else {}))
    out = net(torch.randn(2, 1, 64))
    assert [tuple(o.shape) for o in out] == [(2, 2, 64), (2, 2, 32), (2, 2, 16)]


# parameters at SMALL_2D / SMALL_3D, width 1/8, 3 classes (TransUNet with 1 ViT layer): pinned so
# that architecture changes are deliberate
PINNED_PARAMETERS = {
    ("AttentionUNet", "2d"): 173524, ("AttentionUNet", "3d"): 492756,
    ("DenseNetCoarse", "2d"): 173731, ("DenseNetCoarse", "3d"): 400547,
    ("FPN", "2d"): 145409, ("FPN", "3d"): 410369,
    ("LinkNet", "2d"): 45409, ("LinkNet", "3d"): 130401,
    ("ResUNet", "2d"): 127657, ("ResUNet", "3d"): 352169,
    ("SwinUNet", "2d"): 48931, ("SwinUNet", "3d"): 71403,
    ("TransUNet", "2d"): 347441, ("TransUNet", "3d"): 780465,
    ("UNet", "2d"): 167921, ("UNet", "3d"): 484593,
    ("UNetPlusPlus", "2d"): 185617, ("UNetPlusPlus", "3d"): 522769,
    ("VNet", "2d"): 34681, ("VNet", "3d"): 165561,
}


@pytest.mark.parametrize("configuration", [SMALL_2D, SMALL_3D], ids=["2d", "3d"])
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_pinned_parameter_counts(name, configuration):
    dim = f"{len(configuration['patch_size'])}d"
    n = sum(p.numel() for p in build(name, configuration).parameters())
    assert n == PINNED_PARAMETERS[(name, dim)]


def test_vgg16_encoder_is_vgg16():
    net = build("UNet", LARGE_2D, width=1.0)
    enc = net.encoder
    assert enc.output_channels[:5] == [64, 128, 256, 512, 512]
    convs = [sum(isinstance(m, nn.Conv2d) for m in stage.modules()) for stage in enc.stages]
    assert convs[:5] == [2, 2, 3, 3, 3]
    pools = [sum(isinstance(m, nn.MaxPool2d) for m in stage.modules()) for stage in enc.stages]
    assert pools == [0] + [1] * 6  # VGG pools between blocks; deeper plans add 512-wide blocks
    # VGG16's 13 conv layers: 14.71M parameters with 3-channel input; ours: 1 channel + norm affine
    first5 = sum(p.numel() for s in enc.stages[:5] for m in s.modules() if isinstance(m, nn.Conv2d)
                 for p in m.parameters())
    assert first5 == 14_714_688 - 2 * 64 * 9


def test_densenet_coarse_blocks():
    net = build("DenseNetCoarse", LARGE_2D, width=1.0)
    from nnunet_iph.networks.encoders import DenseLayer

    layers = [sum(isinstance(m, DenseLayer) for m in s.modules()) for s in net.encoder.stages]
    assert layers == [6] * 7
    pools = [sum(isinstance(m, nn.AvgPool2d) for m in s.modules()) for s in net.encoder.stages]
    assert pools == [0] + [1] * 6
    assert net.encoder.output_channels[:5] == [256, 320, 352, 368, 376]  # growth 32, compression 0.5


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_every_encoder_with_every_decoder(name, encoder):
    kwargs = resolved_arch_kwargs(SMALL_2D)  # carries features_per_stage / n_conv_per_stage for 'plain'
    net = build(name, SMALL_2D, encoder=encoder) if encoder != "resenc" else build(
        name, SMALL_2D, encoder=encoder, n_blocks_per_stage=[1] * kwargs["n_stages"])
    out = run_forward_backward(net, SMALL_2D, batch=1)
    assert [tuple(o.shape[2:]) for o in out] == deep_supervision_shapes(SMALL_2D)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_patch_size_not_fitting_the_stride_is_a_clear_error(name):
    kwargs = {**resolved_arch_kwargs(SMALL_2D), "width": WIDTH, **(SMALL_VIT if name == "TransUNet" else {})}
    with pytest.raises(ValueError, match=r"total stride \[8, 8\].*axis \[1\]"):
        NETWORKS[name](1, 2, True, patch_size=[80, 44], **kwargs)
    net = NETWORKS[name](1, 2, True, patch_size=SMALL_2D["patch_size"], **kwargs)
    with pytest.raises(ValueError, match="does not fit the network"):
        net(torch.randn(1, 1, 80, 44))


def test_transunet_needs_patch_size_and_a_matching_token_grid():
    kwargs = {**resolved_arch_kwargs(SMALL_2D), "width": WIDTH, **SMALL_VIT}
    with pytest.raises(ValueError, match="needs patch_size"):
        NETWORKS["TransUNet"](1, 2, True, **kwargs)
    net = NETWORKS["TransUNet"](1, 2, True, patch_size=SMALL_2D["patch_size"], **kwargs)
    assert net.encoder.vit.position.shape[1] == (80 // 8) * (48 // 8)
    with pytest.raises(ValueError, match="token grid"):
        net(torch.randn(1, 1, 96, 48))


def test_unknown_arguments_and_encoders_are_rejected():
    kwargs = resolved_arch_kwargs(SMALL_2D)
    with pytest.raises(TypeError, match="unexpected keyword"):
        NETWORKS["UNet"](1, 2, True, not_an_argument=1, **kwargs)
    with pytest.raises(ValueError, match="unknown encoder"):
        NETWORKS["UNet"](1, 2, True, encoder="vgg19", **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("configuration", [LARGE_2D, LARGE_3D], ids=["2d-448x512", "3d-40x224x192"])
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_issue_sizes(name, configuration):
    """The issue's odd sizes (nnU-Net topology: 7 stages in 2D, 6 anisotropic stages in 3D), width 1/16."""
    net = build(name, configuration, width=1 / 16)
    out = run_forward_backward(net, configuration, batch=1)
    assert [tuple(o.shape[2:]) for o in out] == deep_supervision_shapes(configuration)
    assert_finite(out)
