"""Converted datasets pass nnU-Net's own checks (``nnUNetv2_plan_and_preprocess --verify_dataset_integrity``).

End-to-end through the real nnU-Net CLI: marked slow. The nnU-Net folders come from tests/conftest.py
(set before anything imports nnunetv2).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conversion_fixtures import make_pair, regular_positions, write, write_dicom_series, write_manifest
from nnunet_iph.dataset_conversion import convert_multisite, convert_physionet, install_splits

BIN = Path(sys.executable).parent
SUBSET = (49, 50, 54)  # IPH+EDH, IPH only, no hemorrhage


def _plan_and_preprocess(dataset_id: int, *extra: str) -> str:
    cmd = [str(BIN / "nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-c", "2d", "-np", "1",
           "--verify_dataset_integrity", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=1200,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "verify_dataset_integrity Done" in out
    for bad in ("Error:", "Warning: Origin mismatch", "Warning: Direction mismatch", "Unexpected labels"):
        assert bad not in out, out[-4000:]
    return out


def _physionet_subset(src: Path, dest: Path) -> Path:
    """A 3-patient release (symlinks to the shared files, the table filtered to those patients)."""
    for sub in ("ct_scans", "masks"):
        (dest / sub).mkdir(parents=True)
        for pid in SUBSET:
            (dest / sub / f"{pid:03d}.nii.gz").symlink_to(src / sub / f"{pid:03d}.nii.gz")
    lines = (src / "hemorrhage_diagnosis_raw_ct.csv").read_text(encoding="utf-8").splitlines()
    keep = [lines[0]] + [ln for ln in lines[1:] if int(ln.split(",")[0]) in SUBSET]
    (dest / "hemorrhage_diagnosis_raw_ct.csv").write_text("\n".join(keep) + "\n")
    return dest


@pytest.mark.slow
@pytest.mark.shared_data
def test_physionet_subset_passes_nnunet_verification(physionet_dir, nnunet_dirs, tmp_path):
    src = _physionet_subset(physionet_dir, tmp_path / "ctich3")
    ds = convert_physionet(src, 598, "CTICH3", nnunet_dirs["nnUNet_raw"], progress=False)
    assert json.loads((ds / "dataset.json").read_text(encoding="utf-8"))["numTraining"] == 3
    _plan_and_preprocess(598)
    pre = nnunet_dirs["nnUNet_preprocessed"] / ds.name
    assert (pre / "nnUNetPlans.json").is_file()
    dest = install_splits(598)
    assert dest == pre / "splits_final.json"
    assert json.loads(dest.read_text(encoding="utf-8")) == json.loads((ds / "splits_final.json").read_text(encoding="utf-8"))


@pytest.mark.slow
def test_mixed_formats_with_reorientation_pass_nnunet_verification(nnunet_dirs, tmp_path):
    rows = []
    for i in range(4):
        img, msk = make_pair(seed=i, lesion=1 + i, shape=(8, 24, 20),
                             direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1) if i % 2 else None)
        ext = (".nii.gz", ".mha", ".nrrd", ".nii")[i]
        write(img, tmp_path / f"i{i}{ext}")
        write(msk, tmp_path / f"m{i}{ext}")
        rows.append({"subject_id": f"S{i}", "image": f"i{i}{ext}", "mask": f"m{i}{ext}", "site": f"h{i % 2}",
                     "age": "50", "sex": "F"})
    arr = np.random.default_rng(5).integers(-20, 100, (8, 24, 20)).astype(np.int16)
    seg = np.zeros_like(arr)
    seg[3:5, 8:12, 8:12] = 1
    write_dicom_series(arr, tmp_path / "dcm", regular_positions(8), spacing=(0.45, 0.45), uid="1.2.826.0.1.3680043.2.1125.31")
    write_dicom_series(seg, tmp_path / "dcmseg", regular_positions(8), spacing=(0.45, 0.45), uid="1.2.826.0.1.3680043.2.1125.32")
    rows.append({"subject_id": "S4", "image": "dcm", "mask": "dcmseg", "site": "h0", "age": "60", "sex": "M"})
    manifest = write_manifest(tmp_path / "m.csv", rows)
    ds = convert_multisite(manifest, 599, "Mixed", nnunet_dirs["nnUNet_raw"], reorient="RAS", num_workers=2,
                           progress=False)
    assert json.loads((ds / "dataset.json").read_text(encoding="utf-8"))["numTraining"] == 5
    _plan_and_preprocess(599, "--no_pp")  # verification, fingerprint and plans; preprocessing is tested above
