"""``convert --brain-mask [--brain-fill]`` and ``--ct-channels N`` on the phantom: masked voxels, the kept
masks, the dataset.json record, hemorrhage outside the mask, pass-through inputs, re-runs, bad options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conversion_fixtures import read_rows, report, write, write_manifest
from nnunet_iph.brain.extraction import intracranial_mask
from tests.conftest import run_cli

OUTSIDE = 5  # label voxels put into the air corner of sub0002: outside any intracranial mask


@pytest.fixture(scope="module")
def steps_source(phantom_cohort, tmp_path_factory) -> Path:
    """Three phantom subjects: sub0001 as generated, sub0002 with OUTSIDE extra label voxels in the air,
    sub0003 without skull (bone set to soft tissue: the extraction passes it through)."""
    src = phantom_cohort.parent
    root = tmp_path_factory.mktemp("steps_src")
    rows = []
    for sid in ("sub0001", "sub0002", "sub0003"):
        image = sitk.ReadImage(str(src / "images" / f"{sid}.nii.gz"))
        label = sitk.ReadImage(str(src / "masks" / f"{sid}.nii.gz"))
        if sid == "sub0002":
            arr = sitk.GetArrayFromImage(label)
            assert not arr[0, 0, :OUTSIDE].any()
            arr[0, 0, :OUTSIDE] = 1
            label = _like(arr, label)
        if sid == "sub0003":
            arr = sitk.GetArrayFromImage(image)
            arr[arr >= 160] = 40
            image = _like(arr, image)
        rows.append({"subject_id": sid, "image": str(write(image, root / "images" / f"{sid}.nii.gz")),
                     "mask": str(write(label, root / "masks" / f"{sid}.nii.gz")), "site": "A", "age": 40,
                     "sex": "F"})
    return write_manifest(root / "manifest.csv", rows)


def _like(arr: np.ndarray, ref: sitk.Image) -> sitk.Image:
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(ref)
    return out


def _arr(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _convert(manifest: Path, raw: Path, *extra: str, check: bool = True):
    return run_cli("nnunet-iph", "convert", "multisite", str(manifest), "-d", "571", "--name", "Steps",
                   "--raw-root", str(raw), "--no-progress", *extra, check=check)


def test_brain_mask_strips_keeps_masks_counts_outside_and_passes_through(steps_source, tmp_path):
    proc = _convert(steps_source, tmp_path, "--brain-mask")
    ds = tmp_path / "Dataset571_Steps"
    src = steps_source.parent
    cases = {r["case_id"]: r for r in read_rows(ds / "cases.csv")}
    for sid in ("sub0001", "sub0002"):
        source = sitk.ReadImage(str(src / "images" / f"{sid}.nii.gz"))
        raw = sitk.GetArrayFromImage(source)
        brain = _arr(ds / "brainmasks" / f"{sid}.nii.gz")
        np.testing.assert_array_equal(brain, sitk.GetArrayFromImage(intracranial_mask(source).mask))
        assert 0.05 < brain.mean() < 0.8  # a real mask, neither empty nor passed through
        out = _arr(ds / "imagesTr" / f"{sid}_0000.nii.gz")
        assert out.dtype == raw.dtype
        np.testing.assert_array_equal(out[brain == 1], raw[brain == 1])
        assert (out[brain == 0] == raw.min()).all()  # default fill: the scan's minimum (air)
        assert cases[sid]["brain_fill"] == f"{raw.min():g}" and cases[sid]["brain_passed_through"] == "0"
        label = _arr(ds / "labelsTr" / f"{sid}.nii.gz")
        np.testing.assert_array_equal(label, _arr(src / "masks" / f"{sid}.nii.gz"))  # the label is not cut
        assert cases[sid]["hemorrhage_outside_brain_voxels"] == str(int(((label > 0) & (brain == 0)).sum()))
    assert cases["sub0001"]["hemorrhage_outside_brain_voxels"] == "0"
    assert cases["sub0002"]["hemorrhage_outside_brain_voxels"] == str(OUTSIDE)
    assert "sub0002: 5 reference hemorrhage voxel(s)" in proc.stderr and "label is kept unchanged" in proc.stderr
    assert "sub0002: 5 reference hemorrhage voxel(s)" in report(ds)["sub0002"]["notes"]

    # no skull: a warning naming the case, the CT unmasked (byte copy of the source), an all-ones mask
    assert "warning: sub0003: no skull in the field of view" in proc.stderr
    assert "passed through (no masking); the CT is converted unmasked" in proc.stderr
    assert (ds / "imagesTr" / "sub0003_0000.nii.gz").read_bytes() == (src / "images" / "sub0003.nii.gz").read_bytes()
    assert (_arr(ds / "brainmasks" / "sub0003.nii.gz") == 1).all()
    assert cases["sub0003"]["brain_passed_through"] == "1" and cases["sub0003"]["intracranial_ml"] == ""

    meta = json.loads((ds / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"}
    assert meta["nnunet_iph"] == {"brain_mask": {"work_spacing_mm": 1.5, "bone_hu": 160.0, "soft_min_hu": -15.0,
                                                 "close_mm": 3.0, "cut_mm": 6.0, "contact_mm": 4.0,
                                                 "min_bone_contact": 0.5, "grow_mm": 2.0, "min_volume_ml": 500.0,
                                                 "max_volume_ml": 3000.0, "fill": "minimum"}}
    assert not list((ds / "imagesTr").glob("*_0001*"))

    # a given fill value; the dataset is reconverted (options changed), the masks stay
    _convert(steps_source, tmp_path, "--brain-mask", "--brain-fill", "-1024")
    brain = _arr(ds / "brainmasks" / "sub0001.nii.gz")
    assert (_arr(ds / "imagesTr" / "sub0001_0000.nii.gz")[brain == 0] == -1024).all()
    assert json.loads((ds / "dataset.json").read_text())["nnunet_iph"]["brain_mask"]["fill"] == -1024.0


def test_ct_channels_rerun_and_back(steps_source, tmp_path):
    proc = _convert(steps_source, tmp_path, "--ct-channels", "3", "--brain-mask")
    ds = tmp_path / "Dataset571_Steps"
    for sid in ("sub0001", "sub0002", "sub0003"):
        files = [ds / "imagesTr" / f"{sid}_{c:04d}.nii.gz" for c in range(3)]
        assert len({f.read_bytes() for f in files}) == 1  # identical channels
        assert len({f.stat().st_ino for f in files}) == 1  # hard links: no extra disk space
    meta = json.loads((ds / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT", "1": "CT", "2": "CT"} and meta["nnunet_iph"]["ct_channels"] == 3

    # idempotent: nothing rewritten
    tracked = sorted(p for p in ds.rglob("*") if p.is_file() and ".nnunet_iph" not in p.parts)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in tracked}
    proc = _convert(steps_source, tmp_path, "--ct-channels", "3", "--brain-mask")
    assert "3 unchanged" in proc.stderr
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in tracked} == before

    # back to a plain conversion: the copies and the masks go, so does the record
    _convert(steps_source, tmp_path)
    assert sorted(p.name for p in (ds / "imagesTr").iterdir()) == [f"sub000{i}_0000.nii.gz" for i in (1, 2, 3)]
    assert not list((ds / "brainmasks").glob("*"))
    meta = json.loads((ds / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"} and "nnunet_iph" not in meta
    assert "input_steps" not in meta["nnunet_iph_conversion"]["options"]


@pytest.mark.parametrize("args, message", [
    (("--brain-fill", "-1000"), "--brain-fill / --brain-min-volume-ml need --brain-mask"),
    (("--ct-channels", "0"), "ct_channels must be an integer in 1..16, got 0"),
    (("--brain-mask", "--brain-fill", "nan"), "brain fill must be a finite HU value"),
])
def test_bad_options_are_one_line_errors(steps_source, tmp_path, args, message):
    proc = _convert(steps_source, tmp_path, *args, check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "Dataset571_Steps").exists()


def test_fill_outside_the_pixel_type_skips_the_case_naming_it(steps_source, tmp_path):
    proc = _convert(steps_source, tmp_path, "--brain-mask", "--brain-fill", "40000", "--strict", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "brain fill 40000 cannot be stored in the CT's pixel type int16" in proc.stderr
    assert "sub0001" in proc.stderr and not (tmp_path / "Dataset571_Steps").exists()
