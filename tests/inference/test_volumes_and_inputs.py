"""Volumes in mL and input folder parsing (pure SimpleITK/pandas: no torch, no nnU-Net run)."""

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from nnunet_iph.inference.predict import list_input_cases
from nnunet_iph.inference.outputs import write_prediction_outputs
from nnunet_iph.inference.volumes import mask_volumes


def _mask(path, arr, spacing=(0.5, 0.5, 5.0)):
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))
    return path


def test_volume_in_ml_from_voxel_size(tmp_path):
    arr = np.zeros((4, 10, 10))
    arr[1:3, 2:7, 2:7] = 1  # 50 voxels of 0.5 x 0.5 x 5 mm = 1.25 mm3 -> 62.5 mm3
    v = mask_volumes(_mask(tmp_path / "a.nii.gz", arr))
    assert v["n_voxels"] == 50 and v["hemorrhage_ml"] == pytest.approx(0.0625)
    arr[0, 0, 0] = 2
    v = mask_volumes(_mask(tmp_path / "b.nii.gz", arr), {"background": 0, "iph": 1, "ivh": 2})
    assert v["hemorrhage_ml"] == pytest.approx(51 * 1.25e-3) and v["ivh_ml"] == pytest.approx(1.25e-3)


def test_volume_table_csv(tmp_path):
    _mask(tmp_path / "c1.nii.gz", np.ones((2, 2, 2)), (1.0, 1.0, 1.0))
    _mask(tmp_path / "c2.nii.gz", np.zeros((2, 2, 2)), (1.0, 1.0, 1.0))
    df = pd.read_csv(write_prediction_outputs(tmp_path, {"c1": [], "c2": []}, ".nii.gz", qc=False))
    assert list(df.columns[:3]) == ["case", "mask", "hemorrhage_ml"]
    assert df["hemorrhage_ml"].tolist() == [0.008, 0.0]
    with pytest.raises(ValueError, match=r"c3\.nii\.gz: file not found"):
        write_prediction_outputs(tmp_path, {"c3": []}, ".nii.gz", qc=False)


def test_input_naming(tmp_path):
    for name in ("a_0000.nii.gz", "b_0000.nii.gz"):
        (tmp_path / name).touch()
    assert list(list_input_cases(tmp_path, ".nii.gz", 1)) == ["a", "b"]
    with pytest.raises(ValueError, match="channels"):
        list_input_cases(tmp_path, ".nii.gz", 2)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "ct_17.nii.gz").touch()
    assert list_input_cases(plain, ".nii.gz", 1) == {"ct_17": [str(plain / "ct_17.nii.gz")]}
    (plain / "x_0000.nii.gz").touch()
    with pytest.raises(ValueError, match="mixes"):
        list_input_cases(plain, ".nii.gz", 1)
    with pytest.raises(FileNotFoundError, match="no .mha files"):
        list_input_cases(tmp_path / "plain", ".mha", 1)
