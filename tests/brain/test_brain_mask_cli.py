"""``nnunet-iph brain-mask`` through the real console script: outputs, CSV, QC, bad inputs, re-runs."""

from __future__ import annotations

import os
import stat

import numpy as np
import pandas as pd
import SimpleITK as sitk

from conftest import run_cli
from test_extraction import synthetic_head


def _write_inputs(folder):
    folder.mkdir()
    head, _, _ = synthetic_head(size=(150, 30, 150), spacing=(1.2, 5.0, 1.4))
    sitk.WriteImage(head, str(folder / "caseA_0000.nii.gz"))
    sitk.WriteImage(head, str(folder / "caseA_0001.nii.gz"))  # a second input channel: not the CT
    sitk.WriteImage(sitk.Cast(head, sitk.sitkFloat32) * 0 + 50, str(folder / "flat.nii.gz"))
    return head


def test_folder_outputs_csv_qc_and_warnings(tmp_path):
    _write_inputs(tmp_path / "in")
    head = sitk.ReadImage(str(tmp_path / "in" / "caseA_0000.nii.gz"))  # the grid as stored
    out = tmp_path / "out"
    proc = run_cli("nnunet-iph", "brain-mask", str(tmp_path / "in"), str(out), "--qc", "--no-progress")
    table = pd.read_csv(out / "brain_masks.csv", keep_default_na=False)
    assert list(table["case"]) == ["caseA", "flat"]
    a = table.set_index("case").loc["caseA"]
    assert a["passed_through"] in (False, "False") and float(a["intracranial_ml"]) > 500 and a["error"] == ""
    mask = sitk.ReadImage(str(out / "caseA.nii.gz"))
    assert mask.GetSize() == head.GetSize()
    for what in ("GetDirection", "GetOrigin", "GetSpacing"):  # NIfTI stores the grid in float32
        assert np.allclose(getattr(mask, what)(), getattr(head, what)(), rtol=0, atol=1e-5), what
    assert set(np.unique(sitk.GetArrayViewFromImage(mask))) == {0, 1}
    flat = table.set_index("case").loc["flat"]
    assert flat["intracranial_ml"] == "" and "flat" in flat["warnings"] and "passed through" in flat["warnings"]
    assert "warning: flat:" in proc.stderr
    assert (out / "qc" / "caseA.png").stat().st_size > 1000 and (out / "qc" / "flat.png").is_file()
    mode = stat.S_IMODE(os.stat(out / "brain_masks.csv").st_mode)
    assert mode == 0o666 & ~_umask()
    # a re-run is safe and gives the same masks
    run_cli("nnunet-iph", "brain-mask", str(tmp_path / "in"), str(out), "--no-progress")
    again = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "caseA.nii.gz")))
    assert np.array_equal(again, sitk.GetArrayFromImage(mask))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_bad_inputs_name_the_file_and_leave_no_stale_mask(tmp_path):
    _write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    run_cli("nnunet-iph", "brain-mask", str(tmp_path / "in"), str(out), "--no-progress")
    good = (tmp_path / "in" / "caseA_0000.nii.gz").read_bytes()
    (tmp_path / "in" / "caseA_0000.nii.gz").write_bytes(good[: len(good) // 2])  # truncated
    proc = run_cli("nnunet-iph", "brain-mask", str(tmp_path / "in"), str(out), "--no-progress", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "caseA_0000.nii.gz" in proc.stderr and "truncated" in proc.stderr
    assert not (out / "caseA.nii.gz").exists()  # the old mask of the failed case is gone
    assert "truncated" in pd.read_csv(out / "brain_masks.csv").set_index("case").loc["caseA", "error"]
    for args, message in ((["in", "in"], "is the input folder"), (["missing", "o2"], "input folder not found"),
                          (["in", "out/brain_masks.csv"], "not a folder")):
        proc = run_cli("nnunet-iph", "brain-mask", *[str(tmp_path / a) for a in args], check=False)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
