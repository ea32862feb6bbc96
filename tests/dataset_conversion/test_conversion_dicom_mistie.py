"""DICOM series input (regular, gantry tilt, non-uniform spacing) and the MISTIE-style converter."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from conversion_fixtures import (assert_no_partial_output, assert_same_image, make_pair, read_rows, regular_positions,
                                 report, write, write_dicom_series, write_manifest)
from nnunet_iph.dataset_conversion import convert_mistie, convert_multisite
from nnunet_iph.dataset_conversion.sources import read_volume

NZ, NY, NX = 5, 12, 10
SX, SY = 0.5, 0.6


def _tilted_positions(deg=15.0, dz=5.0):
    t = math.tan(math.radians(deg))
    return [(1.0, 2.0 + k * dz * t, 3.0 + k * dz) for k in range(NZ)]


def _y_ramp(positions):
    """Voxel value = 10 x its physical y (mm): easy to check after any correct resampling."""
    arr = np.empty((len(positions), NY, NX), np.int16)
    for k, p in enumerate(positions):
        arr[k] = np.rint(10 * (p[1] + np.arange(NY) * SY))[:, None]
    return arr


def _mask_arr():
    m = np.zeros((NZ, NY, NX), np.int16)
    m[1:4, 4:8, 3:7] = 1
    return m


def _row(sid, image, mask, **kw):
    return {"subject_id": sid, "image": image, "mask": mask, "site": "s", "age": "70", "sex": "F", **kw}


def _with_good(root, rows):
    """Add one regular NIfTI subject (a dataset with no converted case at all is an error)."""
    img, msk = make_pair()
    write(img, root / "good_img.nii.gz")
    write(msk, root / "good_msk.nii.gz")
    return rows + [_row("good", "good_img.nii.gz", "good_msk.nii.gz")]


def test_regular_series_lossless(tmp_path):
    arr = np.random.default_rng(0).integers(-1000, 1500, (NZ, NY, NX)).astype(np.int16)
    pos = regular_positions(NZ, 5.0)
    write_dicom_series(arr, tmp_path / "img", pos, spacing=(SX, SY))
    write_dicom_series(_mask_arr(), tmp_path / "msk", pos, spacing=(SX, SY), uid="1.2.826.0.1.3680043.2.1125.8")
    ds = convert_multisite(write_manifest(tmp_path / "m.csv", [_row("d1", "img", "msk")]), 560, "Dcm",
                           tmp_path / "raw", progress=False)
    out = sitk.ReadImage(str(ds / "imagesTr" / "d1_0000.nii.gz"))
    assert out.GetPixelID() == sitk.sitkInt16
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(out), arr)
    np.testing.assert_allclose(out.GetSpacing(), (SX, SY, 5.0), atol=1e-6)
    np.testing.assert_allclose(out.GetOrigin(), pos[0], atol=1e-4)
    np.testing.assert_allclose(out.GetDirection(), np.eye(3).ravel(), atol=1e-6)
    lab = sitk.ReadImage(str(ds / "labelsTr" / "d1.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(lab), _mask_arr())
    assert_same_image(read_volume(tmp_path / "img", "image").image, out)
    assert float(read_rows(ds / "cases.csv")[0]["volume_ml"]) == pytest.approx(48 * SX * SY * 5 / 1000)


def test_gantry_tilt_detected_kept_or_resampled(tmp_path):
    pos = _tilted_positions(15.0)
    write_dicom_series(_y_ramp(pos), tmp_path / "tilt", pos, spacing=(SX, SY), tilt_deg=15)
    write_dicom_series(_mask_arr(), tmp_path / "tmask", pos, spacing=(SX, SY), uid="1.2.826.0.1.3680043.2.1125.9")
    geom = read_volume(tmp_path / "tilt", "image").series
    assert geom.tilt_deg == pytest.approx(15.0, abs=0.01) and not geom.nonuniform
    manifest = write_manifest(tmp_path / "m.csv", _with_good(tmp_path, [_row("t1", "tilt", "tmask")]))

    ds = convert_multisite(manifest, 561, "TiltErr", tmp_path / "raw", progress=False)
    assert report(ds)["t1"]["fate"] == "skipped"
    assert "DICOM series has gantry tilt 15.00 deg; pass --dicom-irregular resample" in report(ds)["t1"]["reason"]
    assert_no_partial_output(ds)
    with pytest.raises(ValueError, match="gantry tilt 15.00 deg"):
        convert_multisite(manifest, 562, "TiltStrict", tmp_path / "raw", strict=True, progress=False)

    ds = convert_multisite(manifest, 563, "TiltKeep", tmp_path / "raw", dicom_irregular="keep", progress=False)
    assert "kept as read by SimpleITK (geometry not corrected)" in report(ds)["t1"]["notes"]
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(ds / "imagesTr" / "t1_0000.nii.gz"))),
                                  _y_ramp(pos))

    ds = convert_multisite(manifest, 564, "TiltRes", tmp_path / "raw", dicom_irregular="resample", progress=False)
    out = sitk.ReadImage(str(ds / "imagesTr" / "t1_0000.nii.gz"))
    lab = sitk.ReadImage(str(ds / "labelsTr" / "t1.nii.gz"))
    assert "resampled onto a regular orthogonal grid" in report(ds)["t1"]["notes"]
    np.testing.assert_allclose(out.GetDirection(), np.eye(3).ravel(), atol=1e-9)
    assert out.GetSpacing()[2] == pytest.approx(5.0) and out.GetSize()[2] == NZ
    assert out.GetSize()[1] > NY  # the in-plane grid grows to hold every sheared slice
    assert lab.GetSize() == out.GetSize() and lab.GetOrigin() == out.GetOrigin()
    arr = sitk.GetArrayFromImage(out)
    phys_y = np.array([out.TransformIndexToPhysicalPoint((0, j, 0))[1] for j in range(arr.shape[1])])
    filled = arr != arr.min()
    expected = np.broadcast_to(np.rint(10 * phys_y)[None, :, None], arr.shape)
    assert filled.mean() > 0.45  # 12 of 21 rows hold data in each slice
    assert np.abs(arr[filled].astype(int) - expected[filled]).max() <= 1  # anatomy at the right place
    # the mask follows the same shear: its lit rows sit at the same physical y in every slice
    m = sitk.GetArrayFromImage(lab)
    assert set(np.unique(m)) == {0, 1}
    lit_y = [phys_y[np.flatnonzero(m[k].any(axis=1))] for k in range(1, 4)]
    src_y = [pos[k][1] + np.arange(4, 8) * SY for k in range(1, 4)]
    for got, want in zip(lit_y, src_y):
        np.testing.assert_allclose(got, want, atol=SY / 2 + 1e-6)


def test_nonuniform_spacing_detected_and_resampled(tmp_path):
    z = [0.0, 5.0, 10.0, 20.0, 25.0]  # a missing slice
    pos = [(1.0, 2.0, 3.0 + v) for v in z]
    arr = np.stack([np.full((NY, NX), 100 + 10 * v, np.int16) for v in z])
    arr[:, 0, 0] = -5  # not constant per slice
    write_dicom_series(arr, tmp_path / "gap", pos, spacing=(SX, SY))
    manifest = write_manifest(tmp_path / "m.csv", _with_good(tmp_path, [_row("g1", "gap", "")]))
    ds = convert_multisite(manifest, 565, "Gap", tmp_path / "raw", progress=False)
    assert "non-uniform slice spacing (5-10 mm, median 5 mm)" in report(ds)["g1"]["reason"]
    ds = convert_multisite(manifest, 566, "GapRes", tmp_path / "raw", dicom_irregular="resample", progress=False)
    out = sitk.GetArrayFromImage(sitk.ReadImage(str(ds / "imagesTs" / "g1_0000.nii.gz")))
    assert out.shape == (6, NY, NX)
    np.testing.assert_array_equal(out[:, 5, 5], [100, 150, 200, 250, 300, 350])  # z=15 interpolated


def test_dicom_tag_parsing():
    from nnunet_iph.dicom.reader import DicomError, _floats

    np.testing.assert_allclose(_floats("1\\2.5\\-3", 3, "ImagePositionPatient (0020,0032)", "f.dcm"), [1, 2.5, -3])
    for bad in (None, "", "1\\2", "a\\b\\c"):
        with pytest.raises(DicomError, match=r"DICOM slice f\.dcm: missing or malformed ImagePositionPatient"):
            _floats(bad, 3, "ImagePositionPatient (0020,0032)", "f.dcm")


def _mistie_fixture(root):
    pos = regular_positions(NZ)
    rng = np.random.default_rng(1)
    rows = []
    for i, (phase, kind) in enumerate([("II", "dicom"), ("Phase II", "nifti"), ("III", "dicom"), ("3", "nifti"),
                                       ("2", "dicom"), ("IV", "nifti")]):
        sid = f"M{i}"
        if kind == "dicom":
            write_dicom_series(rng.integers(-50, 90, (NZ, NY, NX)).astype(np.int16), root / sid / "ct", pos,
                               uid=f"1.2.826.0.1.3680043.2.1125.{100 + i}")
            write_dicom_series(_mask_arr(), root / sid / "seg", pos, uid=f"1.2.826.0.1.3680043.2.1125.{200 + i}")
            image, mask = f"{sid}/ct", f"{sid}/seg"
        else:
            img, msk = make_pair(seed=i, lesion=2)
            write(img, root / sid / "ct.nii.gz")
            write(msk, root / sid / "seg.nii.gz")
            image, mask = f"{sid}/ct.nii.gz", f"{sid}/seg.nii.gz"
        rows.append({"scan_id": sid, "patient_id": "PAT0" if i in (0, 4) else f"PAT{i}", "phase": phase,
                     "site": f"site{i % 2}", "scanner": "GE LightSpeed" if i % 2 else "Siemens", "age": str(60 + i),
                     "sex": "MF"[i % 2], "image": image, "mask": "" if i == 3 else mask, "gcs": str(10 + i)})
    return write_manifest(root / "scans.csv", rows)


def test_mistie_phases_dicom_and_nifti(tmp_path):
    table = _mistie_fixture(tmp_path / "src")
    ds = convert_mistie(table, 570, "Mistie", tmp_path / "raw", num_workers=2, progress=False)
    rep = report(ds)
    assert "phase 'IV' is neither II (training) nor III (test)" in rep["M5"]["reason"]
    cases = {r["case_id"]: r for r in read_rows(ds / "cases.csv")}
    assert {c: r["split"] for c, r in cases.items()} == {"M0": "train", "M1": "train", "M2": "test", "M3": "test",
                                                         "M4": "train"}
    assert cases["M0"]["patient_id"] == cases["M4"]["patient_id"] == "PAT0"
    assert (cases["M1"]["scanner"], cases["M1"]["phase"], cases["M1"]["gcs"]) == ("GE LightSpeed", "II", "11")
    assert (ds / "labelsTs" / "M2.nii.gz").is_file() and not (ds / "labelsTs" / "M3.nii.gz").exists()
    dj = json.loads((ds / "dataset.json").read_text(encoding="utf-8"))
    assert dj["numTraining"] == 3 and dj["nnunet_iph_conversion"]["converter"] == "mistie"
    for f in json.loads((ds / "splits_final.json").read_text(encoding="utf-8")):  # both PAT0 scans on one side
        assert ("M0" in f["val"]) == ("M4" in f["val"])
    assert_same_image(tmp_path / "src" / "M1" / "ct.nii.gz", ds / "imagesTr" / "M1_0000.nii.gz")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(ds / "labelsTr" / "M0.nii.gz"))),
                                  _mask_arr())
    assert_no_partial_output(ds)


def test_mistie_table_errors(tmp_path):
    (tmp_path / "t.csv").write_text("scan_id,site\nA,x\n")
    with pytest.raises(ValueError, match=r"scan table .*t\.csv: missing required column\(s\) phase, image"):
        convert_mistie(tmp_path / "t.csv", 571, "E", tmp_path / "raw")
    with pytest.raises(FileNotFoundError, match="scan table .*nope.csv: file not found"):
        convert_mistie(tmp_path / "nope.csv", 571, "E", tmp_path / "raw")
