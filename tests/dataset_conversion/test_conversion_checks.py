"""Every bad input: a clear message naming file and problem, and no partial output.

Each case is one bad subject next to good ones. Without ``strict`` it is skipped (reason in the
report, nothing of it in the dataset, the others converted); with ``strict`` the conversion fails
with the message and writes nothing at all.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from conversion_fixtures import (assert_no_partial_output, dataset_files, make_cohort, make_pair, read_rows, report,
                                 write, write_manifest, write_dicom_series, regular_positions)
from nnunet_iph.dataset_conversion import convert_multisite


def _row(sid: str, image: str | None, mask: str | None, **kw) -> dict:
    return {"subject_id": sid, "image": image or "", "mask": mask or "", "site": "site9", "age": "60", "sex": "M",
            **kw}


def _pair_files(root: Path, name: str, img: sitk.Image | None = None, mask: sitk.Image | None = None,
                ext: str = ".nii.gz") -> tuple[str, str]:
    i0, m0 = make_pair(seed=99, lesion=2)
    write(img if img is not None else i0, root / "bad" / f"{name}_img{ext}")
    write(mask if mask is not None else m0, root / "bad" / f"{name}_mask{ext}")
    return f"bad/{name}_img{ext}", f"bad/{name}_mask{ext}"


def _img_from(arr: np.ndarray, spacing=None) -> sitk.Image:
    im = sitk.GetImageFromArray(arr)
    if spacing:
        im.SetSpacing(spacing)
    return im


def _like(arr: np.ndarray, ref: sitk.Image) -> sitk.Image:
    im = sitk.GetImageFromArray(arr)
    im.CopyInformation(ref)
    return im


def bad_missing_image(root):
    _, m = _pair_files(root, "x")
    return [_row("bad", "bad/nope.nii.gz", m)], r"image .*bad/nope\.nii\.gz: file not found"


def bad_missing_mask(root):
    i, _ = _pair_files(root, "x")
    return [_row("bad", i, "bad/nomask.nii.gz")], r"mask .*bad/nomask\.nii\.gz: file not found"


def bad_unreadable_image(root):
    i, m = _pair_files(root, "x")
    (root / i).write_bytes(b"this is not a NIfTI file" * 20)
    return [_row("bad", i, m)], r"image .*x_img\.nii\.gz: unreadable \(Unable to determine ImageIO reader"


def bad_unreadable_mask(root):
    i, m = _pair_files(root, "x")
    (root / m).write_bytes(b"\x00" * 10)
    return [_row("bad", i, m)], r"mask .*x_mask\.nii\.gz: unreadable"


def bad_truncated_image(root):
    i, m = _pair_files(root, "x")
    data = (root / i).read_bytes()
    (root / i).write_bytes(data[: len(data) // 2])
    return [_row("bad", i, m)], r"image .*x_img\.nii\.gz: truncated or corrupt gzip stream"


def bad_truncated_nii(root):
    i, m = _pair_files(root, "x", ext=".nii")
    data = (root / i).read_bytes()
    (root / i).write_bytes(data[:-100])
    return [_row("bad", i, m)], r"image .*x_img\.nii: truncated: 1692 bytes of voxel data and header, the header needs 1792"


def bad_2d_image(root):
    i, m = _pair_files(root, "x", img=_img_from(np.arange(120, dtype=np.int16).reshape(12, 10)))
    return [_row("bad", i, m)], r"image .*x_img\.nii\.gz: is 2D \(size 10x12\); expected a 3D volume"


def bad_4d_image(root):
    p = root / "bad" / "x4d.nii.gz"
    p.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.arange(2 * 10 * 12 * 6, dtype=np.int16).reshape(10, 12, 6, 2), np.eye(4)), p)
    _, m = _pair_files(root, "x")
    return [_row("bad", "bad/x4d.nii.gz", m)], r"image .*x4d\.nii\.gz: is 4D \(size 10x12x6x2\)"


def bad_single_slice(root):
    i, m = _pair_files(root, "x", img=_img_from(np.arange(120, dtype=np.int16).reshape(1, 12, 10)))
    return [_row("bad", i, m)], r"image .*x_img\.nii\.gz: has a single slice \(size 10x12x1\)"


def bad_2d_mask(root):
    i, m = _pair_files(root, "x", mask=_img_from(np.zeros((12, 10), np.uint8)))
    return [_row("bad", i, m)], r"mask .*x_mask\.nii\.gz: is 2D"


def bad_vector_image(root):
    vec = sitk.Compose([make_pair()[0]] * 3)
    i, m = _pair_files(root, "x", img=vec, ext=".mha")
    return [_row("bad", i, m)], r"image .*x_img\.mha: has 3 components per voxel"


def bad_nan_image(root):
    img, _ = make_pair(seed=1)
    arr = sitk.GetArrayFromImage(img).astype(np.float32)
    arr[1, 2, 3] = np.nan
    i, m = _pair_files(root, "x", img=_like(arr, img))
    return [_row("bad", i, m)], r"image .*x_img\.nii\.gz: contains 1 NaN and 0 infinite voxel values"


def bad_inf_image(root):
    img, _ = make_pair(seed=1)
    arr = sitk.GetArrayFromImage(img).astype(np.float32)
    arr[0, 0, 0] = np.inf
    i, m = _pair_files(root, "x", img=_like(arr, img))
    return [_row("bad", i, m)], r"image .*: contains 0 NaN and 1 infinite voxel values"


def bad_constant_image(root):
    img, _ = make_pair()
    i, m = _pair_files(root, "x", img=_like(np.full((6, 12, 10), -1024, np.int16), img))
    return [_row("bad", i, m)], r"image .*x_img\.nii\.gz: is constant \(every voxel = -1024\)"


def bad_empty_image(root):
    img, _ = make_pair()
    i, m = _pair_files(root, "x", img=_like(np.zeros((6, 12, 10), np.int16), img))
    return [_row("bad", i, m)], r"image .*: is constant \(every voxel = 0\)"


def bad_noninteger_labels(root):
    _, mask = make_pair()
    arr = sitk.GetArrayFromImage(mask).astype(np.float32) * 0.5
    i, m = _pair_files(root, "x", mask=_like(arr, mask))
    return [_row("bad", i, m)], r"mask .*x_mask\.nii\.gz: has non-integer label values \(e\.g\. 0\.5\)"


def bad_unexpected_label(root):
    _, mask = make_pair()
    arr = sitk.GetArrayFromImage(mask)
    arr[0, 0, 0] = 2
    i, m = _pair_files(root, "x", mask=_like(arr, mask))
    return [_row("bad", i, m)], (r"mask .*x_mask\.nii\.gz: has unexpected label values \[2\]; expected only \[0, 1\] "
                                 r"\(pass --merge-labels")


def bad_255_label(root):
    _, mask = make_pair()
    arr = sitk.GetArrayFromImage(mask) * 255
    i, m = _pair_files(root, "x", mask=_like(arr, mask))
    return [_row("bad", i, m)], r"mask .*: has unexpected label values \[255\]"


def bad_negative_label(root):
    _, mask = make_pair()
    arr = sitk.GetArrayFromImage(mask).astype(np.int16)
    arr[0, 0, 0] = -1
    i, m = _pair_files(root, "x", mask=_like(arr, mask))
    return [_row("bad", i, m)], r"mask .*: has unexpected label values \[-1\]; expected only \[0, 1\]$"


def bad_size_mismatch(root):
    img, _ = make_pair()
    _, mask = make_pair(shape=(6, 12, 9))
    i, m = _pair_files(root, "x", img=img, mask=mask)
    return [_row("bad", i, m)], (r"mask .*x_mask\.nii\.gz: does not match image .*x_img\.nii\.gz: size 9x12x6 vs "
                                 r"image 10x12x6 .*pass --resample-mask")


def bad_spacing_mismatch(root):
    img, _ = make_pair()
    _, mask = make_pair(spacing=(0.5, 0.45, 5.0))
    i, m = _pair_files(root, "x", img=img, mask=mask)
    return [_row("bad", i, m)], r"mask .*: does not match image .*: spacing \(0\.5, 0\.45, 5\.0\) vs image .*0\.05 mm"


def bad_origin_mismatch(root):
    img, _ = make_pair()
    _, mask = make_pair(origin=(-10.0, 22.0, -30.0))
    i, m = _pair_files(root, "x", img=img, mask=mask)
    return [_row("bad", i, m)], r"mask .*: does not match image .*: origin differs by 2 mm \(tolerance 0\.001"


def bad_direction_mismatch(root):
    img, _ = make_pair()
    _, mask = make_pair(direction=(0, 1, 0, 1, 0, 0, 0, 0, -1))
    i, m = _pair_files(root, "x", img=img, mask=mask)
    return [_row("bad", i, m)], r"mask .*: does not match image .*: direction cosines differ by 2"


def bad_empty_dicom_folder(root):
    (root / "bad" / "emptydir").mkdir(parents=True)
    (root / "bad" / "emptydir" / "readme.txt").write_text("no dicom here")
    _, m = _pair_files(root, "x")
    return [_row("bad", "bad/emptydir", m)], r"image .*emptydir: folder contains no DICOM series"


def bad_two_dicom_series(root):
    arr = np.arange(3 * 12 * 10, dtype=np.int16).reshape(3, 12, 10)
    write_dicom_series(arr, root / "bad" / "two", regular_positions(3), uid="1.2.3.4.1")
    write_dicom_series(arr, root / "bad" / "two_b", regular_positions(3), uid="1.2.3.4.2")
    for p in (root / "bad" / "two_b").iterdir():
        p.rename(root / "bad" / "two" / ("b_" + p.name))
    _, m = _pair_files(root, "x")
    return [_row("bad", "bad/two", m)], r"image .*two: folder contains 2 DICOM series"


def bad_duplicate_ids(root):
    i, m = _pair_files(root, "x")
    return ([_row("dup", i, m), _row("dup", i, m)],
            r"duplicate subject_id 'dup' \(row 8, row 9\); ids must be unique")


def bad_case_id_collision(root):
    i, m = _pair_files(root, "x")
    return ([_row("a b", i, m), _row("a/b", i, m)], r"subject_ids 'a b', 'a/b' all map to case id 'a_b'")


def bad_train_without_mask(root):
    i, _ = _pair_files(root, "x")
    return [_row("bad", i, None, split="train")], r"no mask given for a training case"


def bad_split_value(root):
    i, m = _pair_files(root, "x")
    return [_row("bad", i, m, split="val")], r"split 'val' is neither 'train' nor 'test'"


def bad_no_image_path(root):
    _, m = _pair_files(root, "x")
    return [_row("bad", None, m)], r"no image path given"


def bad_patient_in_train_and_test(root):
    i, m = _pair_files(root, "x")
    return ([_row("bad1", i, m, split="train", patient_id="P9"), _row("bad2", i, m, split="test", patient_id="P9")],
            r"patient 'P9' has scans in both train and test")


BAD = [bad_missing_image, bad_missing_mask, bad_unreadable_image, bad_unreadable_mask, bad_truncated_image, bad_truncated_nii,
       bad_2d_image, bad_4d_image, bad_single_slice, bad_2d_mask, bad_vector_image, bad_nan_image, bad_inf_image,
       bad_constant_image, bad_empty_image, bad_noninteger_labels, bad_unexpected_label, bad_255_label,
       bad_negative_label, bad_size_mismatch, bad_spacing_mismatch, bad_origin_mismatch, bad_direction_mismatch,
       bad_empty_dicom_folder, bad_two_dicom_series, bad_duplicate_ids, bad_case_id_collision,
       bad_train_without_mask, bad_split_value, bad_no_image_path, bad_patient_in_train_and_test]


def _manifest_with(root: Path, builder) -> tuple[Path, list[str], str]:
    make_cohort(root, n=6)
    good = read_rows(root / "manifest.csv")
    bad_rows, pattern = builder(root)
    cols = ["subject_id", "image", "mask", "site", "age", "sex", "gcs", "split", "patient_id"]
    manifest = write_manifest(root / "manifest_bad.csv", good + bad_rows, cols)
    return manifest, [r["subject_id"] for r in bad_rows], pattern


@pytest.mark.parametrize("builder", BAD, ids=[b.__name__[4:] for b in BAD])
def test_bad_input_skipped_with_reason(tmp_path, builder):
    manifest, bad_ids, pattern = _manifest_with(tmp_path / "src", builder)
    ds = convert_multisite(manifest, 530, "Bad", tmp_path / "raw", progress=False)
    rep = report(ds)
    for sid in bad_ids:
        assert rep[sid]["fate"] == "skipped"
        assert re.search(pattern, rep[sid]["reason"]), rep[sid]["reason"]
    assert all(rep[f"sub{i:02d}"]["fate"] == "converted" for i in range(6))
    cases = {r["case_id"] for r in read_rows(ds / "cases.csv")}
    assert cases == {f"sub{i:02d}" for i in range(6)}
    assert {f.split("/")[1].split("_0000")[0].split(".nii")[0] for f in dataset_files(ds)} == cases
    assert_no_partial_output(ds)
    assert json.loads((ds / "dataset.json").read_text(encoding="utf-8"))["numTraining"] == 6
    assert json.loads((ds / "dataset.json").read_text(encoding="utf-8"))["nnunet_iph_conversion"]["counts"]["skipped"] == len(bad_ids)


@pytest.mark.parametrize("builder", BAD, ids=[b.__name__[4:] for b in BAD])
def test_bad_input_strict_fails_and_writes_nothing(tmp_path, builder):
    manifest, bad_ids, pattern = _manifest_with(tmp_path / "src", builder)
    with pytest.raises(ValueError, match=r"strict: .*cannot be converted \(nothing was written\)") as err:
        convert_multisite(manifest, 531, "Strict", tmp_path / "raw", strict=True, progress=False, num_workers=1)
    assert re.search(pattern, str(err.value), flags=re.M), str(err.value)
    assert not (tmp_path / "raw" / "Dataset531_Strict").exists()


def test_strict_with_workers_and_existing_dataset_untouched(tmp_path):
    manifest, _, pattern = _manifest_with(tmp_path / "src", bad_constant_image)
    good = write_manifest(tmp_path / "src" / "good.csv", read_rows(tmp_path / "src" / "manifest.csv"))
    ds = convert_multisite(good, 532, "Keep", tmp_path / "raw", progress=False)
    before = {f: (ds / f).stat().st_mtime_ns for f in dataset_files(ds)}
    dj = (ds / "dataset.json").read_bytes()
    with pytest.raises(ValueError, match=pattern):
        convert_multisite(manifest, 532, "Keep", tmp_path / "raw", strict=True, num_workers=2, overwrite=True,
                          progress=False)
    assert {f: (ds / f).stat().st_mtime_ns for f in dataset_files(ds)} == before
    assert (ds / "dataset.json").read_bytes() == dj
    assert_no_partial_output(ds)


@pytest.mark.parametrize("content, pattern", [
    ("subject_id,image,site,age,sex\n", r"manifest .*m\.csv: missing required column\(s\) mask"),
    ("", r"manifest .*m\.csv: is empty"),
    ("subject_id,image,mask,site,age,sex\n", r"manifest .*m\.csv: has a header but no rows"),
    ("subject_id,image,mask,site,age,sex,Site\n", r"manifest .*m\.csv: duplicate column\(s\) site"),
])
def test_manifest_errors(tmp_path, content, pattern):
    (tmp_path / "m.csv").write_text(content)
    for strict in (False, True):
        with pytest.raises(ValueError, match=pattern):
            convert_multisite(tmp_path / "m.csv", 533, "Man", tmp_path / "raw", strict=strict, progress=False)
    assert not (tmp_path / "raw").exists()


def test_malformed_row_is_reported(tmp_path):
    make_cohort(tmp_path, n=2)
    with open(tmp_path / "manifest.csv", "a", encoding="utf-8") as fh:
        fh.write("sub09,images/sub00.nii.gz,masks/sub00.nii.gz,site0\n")
    ds = convert_multisite(tmp_path / "manifest.csv", 534, "Rows", tmp_path / "raw", progress=False)
    assert re.search(r"line 4: has 4 fields, header has 7", report(ds)["sub09"]["reason"])


def test_all_bad_raises_after_writing_report(tmp_path):
    rows = [_row("only", "nope.nii.gz", "nope_mask.nii.gz")]
    with pytest.raises(ValueError, match=r"no case could be converted; see .*conversion_report\.csv"):
        convert_multisite(write_manifest(tmp_path / "m.csv", rows), 535, "None", tmp_path / "raw", progress=False)
    ds = tmp_path / "raw" / "Dataset535_None"
    assert report(ds)["only"]["fate"] == "skipped" and not (ds / "dataset.json").exists()


# ---- tolerated / repaired inputs ----------------------------------------------------------------

def test_geometry_within_tolerance_uses_image_geometry(tmp_path):
    img, _ = make_pair()
    _, mask = make_pair(origin=(-10.0004, 20.0, -30.0))
    write(img, tmp_path / "i.nii.gz")
    write(mask, tmp_path / "m.nii.gz")
    ds = convert_multisite(write_manifest(tmp_path / "m.csv", [_row("a", "i.nii.gz", "m.nii.gz")]), 536, "Tol",
                           tmp_path / "raw", progress=False)
    lab = sitk.ReadImage(str(ds / "labelsTr" / "a.nii.gz"))
    out = sitk.ReadImage(str(ds / "imagesTr" / "a_0000.nii.gz"))
    assert lab.GetOrigin() == out.GetOrigin()
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(lab), sitk.GetArrayViewFromImage(mask))
    assert "within tolerance" in report(ds)["a"]["notes"]
    # a tighter tolerance refuses it
    with pytest.raises(ValueError, match="origin differs by 0.0004 mm"):
        convert_multisite(tmp_path / "m.csv", 537, "Tol2", tmp_path / "raw2", geometry_tolerance=1e-5, strict=True,
                          progress=False)


def test_resample_mask_nearest_neighbour(tmp_path):
    img, _ = make_pair(shape=(6, 12, 10), spacing=(0.45, 0.45, 5.0))
    m = np.zeros((6, 6, 5), np.uint8)
    m[2:4, 1:3, 2:4] = 1
    mask = sitk.GetImageFromArray(m)
    mask.SetSpacing((0.9, 0.9, 5.0))
    mask.SetOrigin(tuple(np.add(img.GetOrigin(), (0.225, 0.225, 0))))  # coarse grid covering the same box
    write(img, tmp_path / "i.nii.gz")
    write(mask, tmp_path / "m.nii.gz")
    rows = [_row("a", "i.nii.gz", "m.nii.gz")]
    ds = convert_multisite(write_manifest(tmp_path / "m.csv", rows), 538, "Res", tmp_path / "raw", resample_mask=True,
                           progress=False)
    lab = sitk.ReadImage(str(ds / "labelsTr" / "a.nii.gz"))
    out = sitk.ReadImage(str(ds / "imagesTr" / "a_0000.nii.gz"))
    assert lab.GetSize() == out.GetSize() and lab.GetSpacing() == out.GetSpacing()
    assert set(np.unique(sitk.GetArrayViewFromImage(lab))) == {0, 1}
    # each coarse voxel becomes 2x2 fine voxels: the volume is preserved exactly here
    assert int(sitk.GetArrayViewFromImage(lab).sum()) == 4 * int(m.sum())
    assert "resampled (nearest neighbour)" in report(ds)["a"]["notes"]
    assert json.loads((ds / "dataset.json").read_text(encoding="utf-8"))["nnunet_iph_conversion"]["options"]["resample_mask"]


def test_merge_labels_and_float_mask(tmp_path):
    img, mask = make_pair(lesion=2)
    arr = sitk.GetArrayFromImage(mask)
    arr[arr == 1] = 3
    arr[0, 0, 0] = 5
    write(img, tmp_path / "i.nii.gz")
    write(_like(arr, mask), tmp_path / "m.nii.gz")
    write(_like(sitk.GetArrayFromImage(mask).astype(np.float32), mask), tmp_path / "mf.nii.gz")
    rows = [_row("multi", "i.nii.gz", "m.nii.gz"), _row("float", "i.nii.gz", "mf.nii.gz")]
    ds = convert_multisite(write_manifest(tmp_path / "m.csv", rows), 539, "Merge", tmp_path / "raw", merge_labels=True,
                           progress=False)
    merged = sitk.GetArrayFromImage(sitk.ReadImage(str(ds / "labelsTr" / "multi.nii.gz")))
    np.testing.assert_array_equal(merged, (arr > 0).astype(np.uint8))
    flt = sitk.ReadImage(str(ds / "labelsTr" / "float.nii.gz"))
    assert flt.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(flt), sitk.GetArrayViewFromImage(mask))
    assert "merged" in report(ds)["multi"]["notes"] and "stored as uint8" in report(ds)["float"]["notes"]

