"""Real head CTs as DICOM through the real ``nnunet-iph predict``: the same masks as from the NIfTI originals.

Two PhysioNet scans are written as DICOM series (benchmarks/dicom_roundtrip.py): 049 with a
localizer and clutter beside it, 074 with its gantry tilt (sheared sform). One fixed 2D model (the
phantom plans, seeded random weights). Skipped without the PhysioNet copy.
"""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import REPO, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]


def _roundtrip():
    spec = importlib.util.spec_from_file_location("dicom_roundtrip", REPO / "benchmarks" / "dicom_roundtrip.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dicom_and_nifti_give_the_same_masks(physionet_dir, phantom_dataset, tmp_path):
    rt = _roundtrip()
    model = rt.untrained_2d_model(phantom_dataset.preprocessed / "nnUNetPlans.json",
                                  phantom_dataset.raw / "dataset.json", tmp_path / "models")
    nifti_in, dicom_in, gap_in = (tmp_path / n for n in ("nifti_in", "dicom_in", "gap_in"))
    nifti_in.mkdir()
    cases = ["049", "074"]
    for i, case in enumerate(cases):
        src = physionet_dir / "ct_scans" / f"{case}.nii.gz"
        (nifti_in / f"{case}_0000.nii.gz").symlink_to(src)
        rt.write_case(src, dicom_in / case, i, localizer=i == 0)
    rt.write_case(physionet_dir / "ct_scans" / "049.nii.gz", gap_in / "gap", 9, drop_slice=10)
    base = ["nnunet-iph", "predict", "-m", str(model), "--device", "cpu", "--disable-tta"]

    proc = run_cli(*base, "-i", str(gap_in), "-o", str(tmp_path / "gap_out"), check=False)
    assert proc.returncode == 2 and "a 10 mm gap between slices 28 and 29 of 38" in proc.stderr, proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr  # one line
    assert not (tmp_path / "gap_out").exists()

    run_cli(*base, "-i", str(nifti_in), "-o", str(tmp_path / "nifti_out"))
    proc = run_cli(*base, "-i", str(dicom_in), "-o", str(tmp_path / "dicom_out"), "--dicom-irregular", "keep")
    assert "049: series" in proc.stdout and "also in the folder:" in proc.stdout and "[localizer]" in proc.stdout
    assert "074: series" in proc.stdout and "gantry tilt 0.50 deg, kept" in proc.stdout
    for case in cases:
        got = rt.compare_case(case, tmp_path / "nifti_out", tmp_path / "dicom_out", dicom_in / case)
        assert got["same_shape"] and got["voxels_differing"] == 0, got
        assert got["foreground_share"] > 0.001, got  # a real mask, not an empty one
        assert got["seg_equals_mask"], got
        # 074: the DICOM slice spacing is measured along the slice normal (5 cos 0.5 deg)
        assert got["volume_ml_dicom"] == pytest.approx(got["volume_ml_nifti"], rel=1e-4 if case == "074" else 1e-9)
