"""What makes the V-Net a V-Net (5x5(x5) residual stages, PReLU, strided-conv down-sampling), on
nnU-Net's own stage layouts (the generic network tests cover shapes, gradients and plans)."""

from __future__ import annotations

import torch
from torch import nn

from nnunet_iph.networks.vnet import VNET_CONVS, ResidualStage, VNet, vnet_kernel
from tests.networks.conftest import SMALL_3D, deep_supervision_shapes, resolved_arch_kwargs


def _net(deep_supervision=True) -> VNet:
    return VNet(1, 2, deep_supervision, width=0.25, **resolved_arch_kwargs(SMALL_3D))


def test_five_by_five_kernels_follow_the_plans_axes():
    net = _net()
    plans_kernels = SMALL_3D["architecture"]["arch_kwargs"]["kernel_sizes"]
    for stage, kernel in zip(net.encoder.stages, plans_kernels):
        body = stage.body if isinstance(stage, ResidualStage) else stage[1].body
        convs = [m for m in body if isinstance(m, nn.Conv3d)]
        assert {c.kernel_size for c in convs} == {vnet_kernel(kernel)}
        assert all(k in (1, 5) for k in vnet_kernel(kernel))
    assert vnet_kernel([1, 3, 3]) == (1, 5, 5)


def test_strided_convolutions_instead_of_pooling_and_prelu_activations():
    net = _net()
    modules = list(net.modules())
    assert not any(isinstance(m, (nn.MaxPool3d, nn.AvgPool3d)) for m in modules)
    assert not any(isinstance(m, nn.LeakyReLU) for m in modules)  # PReLU, not the plans' nonlinearity
    assert any(isinstance(m, nn.PReLU) for m in modules)
    strides = SMALL_3D["architecture"]["arch_kwargs"]["strides"]
    for stage, stride in zip(net.encoder.stages[1:], strides[1:]):
        down = stage[0][0]
        assert isinstance(down, nn.Conv3d) and down.stride == tuple(stride) and down.kernel_size == tuple(stride)
    counts = [len([m for m in (s.body if isinstance(s, ResidualStage) else s[1].body) if isinstance(m, nn.Conv3d)])
              for s in net.encoder.stages]
    assert counts == [VNET_CONVS[min(i, len(VNET_CONVS) - 1)] for i in range(len(counts))]


def test_stages_are_residual():
    torch.manual_seed(0)
    stage = ResidualStage(_net().ops, 4, 4, 2, (3, 3, 3))
    x = torch.randn(1, 4, 6, 6, 6)
    for m in stage.body:
        if isinstance(m, nn.Conv3d):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
    expected = stage.act(stage.body(x) + x)  # body of zero convs + norm -> zeros; output PReLU(x)
    assert torch.allclose(stage(x), expected) and torch.allclose(stage(x), stage.act(x), atol=1e-6)


def test_deep_supervision_scales_are_nnunets():
    net = _net()
    out = net(torch.randn(1, 1, *SMALL_3D["patch_size"]))
    assert [tuple(o.shape[2:]) for o in out] == deep_supervision_shapes(SMALL_3D)
    net.decoder.deep_supervision = False
    assert net(torch.randn(1, 1, *SMALL_3D["patch_size"])).shape[2:] == tuple(SMALL_3D["patch_size"])
