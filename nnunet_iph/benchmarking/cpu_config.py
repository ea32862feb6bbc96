"""The CPU protocol's 2D configuration, derived from nnU-Net's own ``2d`` configuration of a plans file.

Why derived and not hand-written: the plane plans (``nnUNetPlans_axial/_coronal/_sagittal``) differ
in which axes are in-plane (a coronal slice has the 5 mm slice axis in it), so one literal dict
cannot fit all three. The rule is the same for every plane and model: in-plane spacing coarsened to
``spacing_mm`` (axes already coarser, such as 5 mm slices, are kept), patch = the resampled median
image size rounded up to the total stride and capped at ``max_patch``, a fixed batch size, a narrower
``PlainConvUNet`` (``features_per_stage``, 3x3 convs, stride 2 between stages). Everything else -
normalisation, resampling functions, batch Dice, label handling - is inherited from nnU-Net's ``2d``.

A second configuration (``arch_configuration``) inherits the first one (same preprocessed data,
patch, batch) and only adds ``arch_kwargs`` such as ``width``: trainers that build their own network
(FPN, Attention U-Net) read those, while nnU-Net's ``PlainConvUNet`` would reject them.
"""

from __future__ import annotations

import math
from copy import deepcopy
from typing import Any

from nnunet_iph.benchmarking.protocol import PlanSpec

PLAIN_UNET = "dynamic_network_architectures.architectures.unet.PlainConvUNet"


def coarsened_spacing(spacing: list[float], target_mm: float) -> list[float]:
    """Each axis at ``target_mm`` unless it is already coarser."""
    return [max(float(s), float(target_mm)) for s in spacing]


def patch_size_for(median_size: list[float], spacing: list[float], new_spacing: list[float], stride: int,
                   max_patch: int) -> list[int]:
    """Resampled median size, rounded up to a multiple of ``stride``, at most ``max_patch`` (>= ``stride``)."""
    out = []
    for m, s, n in zip(median_size, spacing, new_spacing):
        size = float(m) * float(s) / float(n)
        out.append(int(min(max_patch, max(stride, math.ceil(size / stride) * stride))))
    return out


def plain_unet_architecture(base_arch: dict[str, Any], features: tuple[int, ...]) -> dict[str, Any]:
    """nnU-Net's ``PlainConvUNet`` with ``features`` stages; ops (norm, nonlinearity...) from ``base_arch``."""
    n = len(features)
    kwargs = dict(base_arch.get("arch_kwargs", {}))
    kwargs.update(n_stages=n, features_per_stage=list(features), kernel_sizes=[[3, 3]] * n,
                  strides=[[1, 1]] + [[2, 2]] * (n - 1), n_conv_per_stage=[2] * n,
                  n_conv_per_stage_decoder=[2] * (n - 1))
    return {"network_class_name": PLAIN_UNET, "arch_kwargs": kwargs,
            "_kw_requires_import": list(base_arch.get("_kw_requires_import", []))}


def cpu_configurations(plans: dict[str, Any], spec: PlanSpec, base: str = "2d") -> dict[str, dict[str, Any]]:
    """``{spec.configuration: ..., spec.arch_configuration: ...}`` to add to ``plans['configurations']``."""
    configs = plans.get("configurations", {})
    if base not in configs:
        raise ValueError(f"plans {plans.get('plans_name', '?')}: no {base!r} configuration to derive the CPU "
                         f"configuration from (has {sorted(configs)})")
    cfg = configs[base]
    if "spacing" not in cfg or "median_image_size_in_voxels" not in cfg or "architecture" not in cfg:
        raise ValueError(f"plans {plans.get('plans_name', '?')}: configuration {base!r} lacks spacing, "
                         "median_image_size_in_voxels or architecture (inherited configurations are not supported)")
    spacing = [float(s) for s in cfg["spacing"]]
    new_spacing = coarsened_spacing(spacing, spec.spacing_mm)
    patch = patch_size_for(cfg["median_image_size_in_voxels"], spacing, new_spacing, spec.total_stride,
                           spec.max_patch)
    median = [round(float(m) * s / n, 2) for m, s, n in zip(cfg["median_image_size_in_voxels"], spacing, new_spacing)]
    arch = plain_unet_architecture(cfg["architecture"], spec.features_per_stage)
    main = {"inherits_from": base, "data_identifier": f"{plans['plans_name']}_{spec.configuration}",
            "spacing": new_spacing, "patch_size": patch, "median_image_size_in_voxels": median,
            "batch_size": spec.batch_size, "architecture": arch}
    arch_variant = deepcopy(arch)
    arch_variant["arch_kwargs"].update(deepcopy(spec.arch_kwargs))
    return {spec.configuration: main,
            spec.arch_configuration: {"inherits_from": spec.configuration, "architecture": arch_variant}}


def add_cpu_configurations(plans: dict[str, Any], spec: PlanSpec) -> tuple[dict[str, Any], bool]:
    """``plans`` with the CPU configurations set; the flag says whether anything changed."""
    new = deepcopy(plans)
    wanted = cpu_configurations(plans, spec)
    changed = any(new["configurations"].get(k) != v for k, v in wanted.items())
    new["configurations"].update(wanted)
    return new, changed
