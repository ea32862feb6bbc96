"""Plans-like network configurations built with nnU-Net's own topology function.

``nnunet_configuration(patch_size, spacing)`` returns the ``arch_kwargs`` nnU-Net's default
planner writes (strides, kernel sizes, norm, nonlin ...) for that patch size, so the networks are
tested on the exact stage layouts nnU-Net produces, odd sizes included.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

torch.set_num_threads(1)

_CONV = {2: "torch.nn.modules.conv.Conv2d", 3: "torch.nn.modules.conv.Conv3d"}
_NORM = {2: "torch.nn.modules.instancenorm.InstanceNorm2d", 3: "torch.nn.modules.instancenorm.InstanceNorm3d"}


def nnunet_configuration(patch_size, spacing, batch_size: int = 2, data_identifier: str = "nnUNetPlans_x") -> dict:
    """One plans configuration (as written to nnUNetPlans.json) for ``patch_size``."""
    dim = len(patch_size)
    _, strides, kernels, patch, _ = get_pool_and_conv_props(list(spacing), list(patch_size), 4, 999999)
    n = len(strides)
    return {
        "data_identifier": data_identifier, "preprocessor_name": "DefaultPreprocessor",
        "batch_size": batch_size, "patch_size": [int(p) for p in patch],
        "median_image_size_in_voxels": [int(p) for p in patch], "spacing": [float(s) for s in spacing],
        "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {
                "n_stages": n, "features_per_stage": [min(32 * 2 ** i, 512 if dim == 2 else 320) for i in range(n)],
                "conv_op": _CONV[dim], "kernel_sizes": [list(k) for k in kernels],
                "strides": [list(s) for s in strides], "n_conv_per_stage": [2] * n,
                "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True, "norm_op": _NORM[dim],
                "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
                "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
        "batch_dice": dim == 3,
    }


def nnunet_plans(configurations: dict[str, dict], dataset_name: str = "Dataset999_Tiny") -> dict:
    return {
        "dataset_name": dataset_name, "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
        "original_median_shape_after_transp": [32, 64, 64], "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2], "configurations": configurations,
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {
            "max": 100.0, "mean": 40.0, "median": 40.0, "min": -20.0, "percentile_00_5": -10.0,
            "percentile_99_5": 90.0, "std": 10.0}},
    }


DATASET_JSON = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "hemorrhage": 1},
                "numTraining": 4, "file_ending": ".nii.gz"}

# small but odd, nnU-Net-shaped configurations for fast unit tests
SMALL_2D = nnunet_configuration([80, 48], [1.0, 1.0])
SMALL_3D = nnunet_configuration([16, 48, 40], [3.0, 1.0, 1.0])
# the sizes of the issue ("2D 448x512, 3D 40x224x192"), slow on a shared CPU
LARGE_2D = nnunet_configuration([448, 512], [0.45, 0.45])
LARGE_3D = nnunet_configuration([40, 224, 192], [5.0, 0.45, 0.45])


def resolved_arch_kwargs(configuration: dict) -> dict:
    """arch_kwargs with the class-path strings resolved, as get_network_from_plans does."""
    import pydoc

    arch = configuration["architecture"]
    kwargs = dict(arch["arch_kwargs"])
    for key in arch["_kw_requires_import"]:
        if kwargs[key] is not None:
            kwargs[key] = pydoc.locate(kwargs[key])
    return kwargs


def deep_supervision_shapes(configuration: dict) -> list[tuple[int, ...]]:
    """Target shapes nnU-Net's DS transform makes: its own scales (trainer code) x patch size."""
    from types import SimpleNamespace

    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    fake = SimpleNamespace(enable_deep_supervision=True, configuration_manager=SimpleNamespace(
        pool_op_kernel_sizes=configuration["architecture"]["arch_kwargs"]["strides"]))
    scales = nnUNetTrainer._get_deep_supervision_scales(fake)
    return [tuple(int(round(p * s)) for p, s in zip(configuration["patch_size"], scale)) for scale in scales]


def assert_finite(outputs) -> None:
    for o in outputs if isinstance(outputs, (list, tuple)) else [outputs]:
        assert torch.isfinite(o).all()
