"""Building blocks shared by every network: dimension-agnostic ops, conv blocks, checks, init.

Everything is 1D/2D/3D through ``conv_op`` (``nn.Conv1d``/``Conv2d``/``Conv3d``), the way
dynamic-network-architectures does it, so one class serves nnU-Net's ``2d`` and ``3d_*`` plans.
Per-axis kernel sizes and strides (``[1, 3, 3]``, ``[1, 2, 2]`` in anisotropic 3D plans) are
honoured everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence, Type

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd

_CONV_DIM = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}
_TRANSP = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_POOL = {("max", 1): nn.MaxPool1d, ("max", 2): nn.MaxPool2d, ("max", 3): nn.MaxPool3d,
         ("avg", 1): nn.AvgPool1d, ("avg", 2): nn.AvgPool2d, ("avg", 3): nn.AvgPool3d}
_INSTANCE_NORM = {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
_INTERP_MODE = {1: "linear", 2: "bilinear", 3: "trilinear"}


def conv_dim(conv_op: Type[_ConvNd]) -> int:
    for base, dim in _CONV_DIM.items():
        if isinstance(conv_op, type) and issubclass(conv_op, base):
            return dim
    raise ValueError(f"conv_op must be nn.Conv1d, nn.Conv2d or nn.Conv3d, got {conv_op!r}")


def per_axis(value: int | Sequence[int], dim: int, what: str) -> tuple[int, ...]:
    """``3`` -> ``(3, 3)`` for 2D; a sequence must already have one entry per axis."""
    if isinstance(value, (int, np.integer)):
        return (int(value),) * dim
    value = tuple(int(v) for v in value)
    if len(value) != dim:
        raise ValueError(f"{what} {list(value)} has {len(value)} entries, expected {dim} (one per axis)")
    return value


def per_stage(value: Any, n_stages: int, dim: int, what: str) -> list[tuple[int, ...]]:
    """Plans-style per-stage kernel sizes / strides (scalar, per-axis list or list of lists)."""
    if isinstance(value, (int, np.integer)):
        return [per_axis(value, dim, what)] * n_stages
    value = list(value)
    if len(value) != n_stages:
        raise ValueError(f"{what} has {len(value)} entries, expected one per stage ({n_stages})")
    return [per_axis(v, dim, f"{what}[{i}]") for i, v in enumerate(value)]


def cumulative_strides(strides: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    """Downsampling factor of each stage's output relative to the input."""
    return [tuple(int(v) for v in s) for s in np.cumprod(np.array(strides), axis=0)]


def check_spatial_size(shape: Sequence[int], strides: Sequence[Sequence[int]], network: str) -> None:
    """Raise a ValueError naming the axis when ``shape`` is not divisible by the total stride.

    nnU-Net's planner always makes ``patch_size`` divisible by the product of its strides, so this
    only fires for hand-written plans or inputs that bypass the sliding-window predictor.
    """
    total = cumulative_strides(strides)[-1]
    bad = [a for a, (s, t) in enumerate(zip(shape, total)) if s % t or s < t]
    if len(shape) != len(total) or bad:
        raise ValueError(
            f"{network}: spatial size {list(shape)} does not fit the network: each axis must be a "
            f"positive multiple of the total stride {list(total)} (the product of the plans' strides / "
            f"pool_op_kernel_sizes{'' if not bad else f'; axis {bad} fails'}). Use a patch size from "
            "nnU-Net's plans or change 'strides'.")


def interpolate_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(Bi/tri)linear resize, the N-D equivalent the FPN head and attention gates need."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode=_INTERP_MODE[x.ndim - 2], align_corners=False)


@dataclass
class Ops:
    """The plans' choice of conv / norm / nonlinearity / dropout, shared by all blocks of a network."""

    conv_op: Type[_ConvNd]
    norm_op: Type[nn.Module] | None = None
    norm_op_kwargs: dict = field(default_factory=dict)
    nonlin: Type[nn.Module] | None = None
    nonlin_kwargs: dict = field(default_factory=dict)
    dropout_op: Type[nn.Module] | None = None
    dropout_op_kwargs: dict = field(default_factory=dict)
    conv_bias: bool = True

    @classmethod
    def from_plans(cls, conv_op, norm_op=None, norm_op_kwargs=None, nonlin=None, nonlin_kwargs=None,
                   dropout_op=None, dropout_op_kwargs=None, conv_bias=True) -> "Ops":
        """nnU-Net's defaults (InstanceNorm affine, LeakyReLU 0.01) where the plans give none."""
        dim = conv_dim(conv_op)
        if norm_op is None:
            norm_op, norm_op_kwargs = _INSTANCE_NORM[dim], {"eps": 1e-5, "affine": True}
        if nonlin is None:
            nonlin, nonlin_kwargs = nn.LeakyReLU, {"negative_slope": 1e-2, "inplace": True}
        return cls(conv_op, norm_op, dict(norm_op_kwargs or {}), nonlin, dict(nonlin_kwargs or {}),
                   dropout_op, dict(dropout_op_kwargs or {}), bool(conv_bias))

    @property
    def dim(self) -> int:
        return conv_dim(self.conv_op)

    def norm(self, channels: int) -> nn.Module:
        return self.norm_op(channels, **self.norm_op_kwargs) if self.norm_op else nn.Identity()

    def act(self) -> nn.Module:
        return self.nonlin(**self.nonlin_kwargs) if self.nonlin else nn.Identity()

    def conv(self, cin: int, cout: int, kernel: int | Sequence[int], stride: int | Sequence[int] = 1,
             bias: bool | None = None) -> _ConvNd:
        kernel = per_axis(kernel, self.dim, "kernel size")
        return self.conv_op(cin, cout, kernel, per_axis(stride, self.dim, "stride"),
                            [(k - 1) // 2 for k in kernel], bias=self.conv_bias if bias is None else bias)

    def transp_conv(self, cin: int, cout: int, stride: Sequence[int]) -> _ConvTransposeNd:
        """Learned upsampling by exactly ``stride`` (kernel = stride, as nnU-Net's decoder)."""
        stride = per_axis(stride, self.dim, "stride")
        return _TRANSP[self.dim](cin, cout, stride, stride, bias=self.conv_bias)

    def pool(self, kind: str, stride: Sequence[int]) -> nn.Module:
        stride = per_axis(stride, self.dim, "stride")
        if all(s == 1 for s in stride):
            return nn.Identity()
        return _POOL[(kind, self.dim)](stride, stride)

    def dropout(self) -> nn.Module:
        return self.dropout_op(**self.dropout_op_kwargs) if self.dropout_op else nn.Identity()


class ConvNormAct(nn.Sequential):
    """conv -> (dropout) -> norm -> nonlin: nnU-Net's ConvDropoutNormReLU."""

    def __init__(self, ops: Ops, cin: int, cout: int, kernel: int | Sequence[int] = 3,
                 stride: int | Sequence[int] = 1, act: bool = True) -> None:
        layers = [ops.conv(cin, cout, kernel, stride)]
        if ops.dropout_op:
            layers.append(ops.dropout())
        layers.append(ops.norm(cout))
        if act:
            layers.append(ops.act())
        super().__init__(*layers)


class NormActConv(nn.Sequential):
    """norm -> nonlin -> conv: the pre-activation ordering of DenseNet layers and ResUNet units."""

    def __init__(self, ops: Ops, cin: int, cout: int, kernel: int | Sequence[int] = 3,
                 stride: int | Sequence[int] = 1) -> None:
        super().__init__(ops.norm(cin), ops.act(), ops.conv(cin, cout, kernel, stride))


def stacked_convs(ops: Ops, cin: int, cout: int, n: int, kernel: int | Sequence[int]) -> nn.Sequential:
    return nn.Sequential(*[ConvNormAct(ops, cin if i == 0 else cout, cout, kernel) for i in range(n)])


class ResidualBlock(nn.Module):
    """ResNet basic block (two convs + identity / 1x1-projection shortcut).

    ``preact=False``: conv-norm-act-conv-norm, add, act (He et al. 2016, used by LinkNet's
    ResNet-18). ``preact=True``: norm-act-conv twice, add (the residual unit of ResUNet,
    Zhang et al. 2018). Downsampling, if any, is by the first conv's stride.
    """

    def __init__(self, ops: Ops, cin: int, cout: int, kernel: Sequence[int], stride: Sequence[int] = 1,
                 preact: bool = False) -> None:
        super().__init__()
        stride = per_axis(stride, ops.dim, "stride")
        self.preact = preact
        if preact:
            self.body = nn.Sequential(NormActConv(ops, cin, cout, kernel, stride),
                                      NormActConv(ops, cout, cout, kernel))
        else:
            self.body = nn.Sequential(ConvNormAct(ops, cin, cout, kernel, stride),
                                      ConvNormAct(ops, cout, cout, kernel, act=False))
        if cin != cout or any(s != 1 for s in stride):
            shortcut = [ops.conv(cin, cout, 1, stride, bias=False)]
            self.shortcut = nn.Sequential(*shortcut, ops.norm(cout)) if not preact else shortcut[0]
        else:
            self.shortcut = nn.Identity()
        self.act = nn.Identity() if preact else ops.act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


def init_weights(module: nn.Module, neg_slope: float = 1e-2) -> None:
    """nnU-Net's InitWeights_He(1e-2), extended to 1D convs (DNA's version skips Conv1d)."""
    if isinstance(module, (_ConvNd, _ConvTransposeNd)):
        nn.init.kaiming_normal_(module.weight, a=neg_slope)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def round_width(channels: float, multiple: int = 1) -> int:
    """Width-multiplied channel count, at least ``multiple`` and divisible by it."""
    return max(multiple, int(round(channels / multiple)) * multiple)
