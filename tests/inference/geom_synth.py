"""Synthetic geometry dataset and "oracle" models that need no training (helpers of conftest.py).

The dataset: anisotropic, non-cubic volumes with a permuted + tilted direction matrix, intensity
= known binary target + noise (``noNorm`` channel, so nnU-Net leaves the values alone), a zero
border (so nnU-Net crops). The oracle network maps each voxel's intensity to logits
``(-g(x - 0.5), g(x - 0.5))``, a pointwise function: any misplaced voxel on the way through
transpose / crop / sliding window / export shows up as a mismatch with the image. The gain ``g``
differs per plane, so the three planes' probabilities differ and their mean is not trivial.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from tests import conftest

GEOM_ID, GEOM_NAME = 561, "GeomSynth"
GAIN = {"axial": 1.0, "coronal": 2.0, "sagittal": 4.0}
SPACING = (4.0, 0.8, 1.1)  # index axes i, j, k: the S-I axis (index 0) is the thick one
_C, _S = np.cos(np.deg2rad(10)), np.sin(np.deg2rad(10))
# columns = directions of index axes: i -> S-I, j -> L-R and k -> -A-P (both rotated 10 deg)
DIRECTION = np.array([[0.0, _C, _S], [0.0, _S, -_C], [1.0, 0.0, 0.0]])
EXPECTED_FORWARD = {"axial": [2, 0, 1], "coronal": [0, 1, 2], "sagittal": [1, 0, 2]}

ORACLE_TRAINER = '''
import torch
from torch import nn
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

GAIN = {gain!r}


class OracleNet(nn.Module):
    def __init__(self, gain):
        super().__init__()
        self.gain = gain

    def forward(self, x):
        z = (x[:, :1] - 0.5) * self.gain
        return torch.cat((-z, z), 1)


class nnUNetTrainerOracle(nnUNetTrainer):
    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision=True):
        plane = plans_manager.plans.get("nnunet_iph_plane", {{}}).get("plane", "axial")
        return OracleNet(GAIN[plane])
'''


def make_case(seed: int, size_ijk: tuple[int, int, int], direction: np.ndarray = DIRECTION):
    """(image, target) with a blobby target inside a 2-voxel zero border."""
    rng = np.random.default_rng(seed)
    shape = size_ijk[::-1]  # numpy order
    field = ndimage.gaussian_filter(rng.standard_normal(shape), (1.5, 2.0, 0.8))
    target = (field > np.quantile(field, 0.8)).astype(np.uint8)
    image = target + rng.uniform(-0.3, 0.3, shape)
    border = np.zeros(shape, bool)
    border[2:-2, 2:-2, 2:-2] = True
    image[~border] = 0.0
    target[~border] = 0
    out = []
    for arr, pixel in ((image.astype(np.float32), None), (target, None)):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing(SPACING)
        img.SetDirection(tuple(direction.ravel()))
        img.SetOrigin((-12.3, 40.1, 7.7))
        out.append(img)
    return out[0], out[1]


def write_raw_dataset(raw_root: Path, dataset_id: int, name: str, n_train: int = 4, n_test: int = 2,
                      odd_direction_case: int | None = None) -> Path:
    folder = raw_root / f"Dataset{dataset_id:03d}_{name}"
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n_train + n_test):
        size = (9 + i % 3, 30 + 2 * i, 24 + i)  # i, j, k: non-cubic, varying
        direction = np.eye(3) if i == odd_direction_case else DIRECTION
        image, target = make_case(100 + i, size, direction)
        split = "Tr" if i < n_train else "Ts"
        sitk.WriteImage(image, str(folder / f"images{split}" / f"case{i:02d}_0000.nii.gz"))
        sitk.WriteImage(target, str(folder / f"labels{split}" / f"case{i:02d}.nii.gz"))
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "noNorm"}, "labels": {"background": 0, "hemorrhage": 1},
        "numTraining": n_train, "file_ending": ".nii.gz", "name": name}))
    return folder


def run_cli(*args: str, check: bool = True, env: dict | None = None, timeout: float = 900):
    """A console script of this venv (see tests.conftest.run_cli)."""
    return conftest.run_cli(*args, check=check, env=env, timeout=timeout)
