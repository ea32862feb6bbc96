"""Multi-site manifest converter: layout, lossless copies, metadata, splits, CLI."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import SimpleITK as sitk

from conversion_fixtures import (assert_no_partial_output, assert_same_image, make_cohort, make_pair, read_rows,
                                 report, write, write_manifest)
from nnunet_iph.dataset_conversion import convert_multisite


def test_layout_dataset_json_and_lossless(tmp_path):
    manifest = make_cohort(tmp_path / "src", n=6)
    ds = convert_multisite(manifest, 510, "Multi", tmp_path / "raw", progress=False)
    assert ds == (tmp_path / "raw" / "Dataset510_Multi").resolve()
    dj = json.loads((ds / "dataset.json").read_text(encoding="utf-8"))
    assert dj["channel_names"] == {"0": "CT"}
    assert dj["labels"] == {"background": 0, "hemorrhage": 1}
    assert dj["numTraining"] == 6 and dj["file_ending"] == ".nii.gz"
    conv = dj["nnunet_iph_conversion"]
    assert conv["converter"] == "multisite" and conv["options"]["reorient"] is None
    assert conv["counts"]["converted"] == 6
    for i in range(6):
        src_img = tmp_path / "src" / "images" / f"sub{i:02d}.nii.gz"
        out_img = ds / "imagesTr" / f"sub{i:02d}_0000.nii.gz"
        assert_same_image(src_img, out_img)
        assert_same_image(tmp_path / "src" / "masks" / f"sub{i:02d}.nii.gz", ds / "labelsTr" / f"sub{i:02d}.nii.gz")
        assert out_img.read_bytes() == src_img.read_bytes()  # NIfTI sources are copied byte for byte
    assert sitk.ReadImage(str(ds / "imagesTr" / "sub00_0000.nii.gz")).GetPixelID() == sitk.sitkInt16
    assert_no_partial_output(ds)


@pytest.mark.parametrize("ext", [".nii", ".mha", ".nrrd"])
def test_other_formats_lossless(tmp_path, ext):
    manifest = make_cohort(tmp_path / "src", n=2, ext=ext)
    ds = convert_multisite(manifest, 511, "Fmt", tmp_path / "raw", progress=False)
    for i in range(2):
        assert_same_image(tmp_path / "src" / "images" / f"sub{i:02d}{ext}", ds / "imagesTr" / f"sub{i:02d}_0000.nii.gz")
        assert_same_image(tmp_path / "src" / "masks" / f"sub{i:02d}{ext}", ds / "labelsTr" / f"sub{i:02d}.nii.gz")
    if ext == ".nii":  # gzip of the very same bytes
        src = (tmp_path / "src" / "images" / "sub00.nii").read_bytes()
        assert gzip.decompress((ds / "imagesTr" / "sub00_0000.nii.gz").read_bytes()) == src


def test_cases_csv_and_report(tmp_path):
    manifest = make_cohort(tmp_path / "src", n=6, scanner="GE", volume_ml="7")
    ds = convert_multisite(manifest, 512, "Meta", tmp_path / "raw", progress=False)
    rows = {r["case_id"]: r for r in read_rows(ds / "cases.csv")}
    assert set(rows) == {f"sub{i:02d}" for i in range(6)}
    r = rows["sub03"]
    assert (r["site"], r["age"], r["sex"], r["split"], r["scanner"], r["gcs"]) == ("site1", "43", "F", "train", "GE", "15")
    assert r["source_volume_ml"] == "7"  # a manifest column clashing with ours is kept, renamed
    assert r["source_image"] == str((tmp_path / "src" / "images" / "sub03.nii.gz").resolve())
    # reference volume: 3 lit voxels per row x 3 rows x 2 slices at 0.45*0.45*5 mm^3
    assert float(r["volume_ml"]) == pytest.approx(18 * 0.45 * 0.45 * 5 / 1000, rel=1e-5)
    assert r["foreground_voxels"] == "18"
    assert rows["sub00"]["volume_ml"] == "0"
    rep = report(ds)
    assert {v["fate"] for v in rep.values()} == {"converted"}
    cols = list(read_rows(ds / "cases.csv")[0])
    assert cols[:8] == ["case_id", "subject_id", "patient_id", "split", "fold", "site", "age", "sex"]


def test_non_ascii_metadata(tmp_path):
    root = tmp_path / "src"
    make_cohort(root, n=3)
    rows = read_rows(root / "manifest.csv")
    rows[0]["site"] = "Hôpital Nord"
    rows[1]["gcs"] = "≥13"
    with open(root / "utf8.csv", "w", newline="", encoding="utf-8") as fh:
        fh.write(",".join(rows[0]) + "\n")
        for r in rows:
            fh.write(",".join(r.values()) + "\n")
    ds = convert_multisite(root / "utf8.csv", 524, "Utf8", tmp_path / "raw", progress=False)
    with open(ds / "cases.csv", encoding="utf-8") as fh:
        text = fh.read()
    assert "Hôpital Nord" in text and "≥13" in text
    loso = json.loads((ds / "splits_loso.json").read_text(encoding="utf-8"))
    assert len(loso) == 3


def test_case_ids_sanitised(tmp_path):
    img, mask = make_pair()
    write(img, tmp_path / "a.nii.gz")
    write(mask, tmp_path / "m.nii.gz")
    rows = [{"subject_id": sid, "image": "a.nii.gz", "mask": "m.nii.gz", "site": "s", "age": "1", "sex": "F"}
            for sid in ("pat 01/a", "pat.02", "ok-3_x")]
    ds = convert_multisite(write_manifest(tmp_path / "m.csv", rows), 513, "Ids", tmp_path / "raw", progress=False)
    assert sorted(p.name for p in (ds / "imagesTr").iterdir()) == [
        "ok-3_x_0000.nii.gz", "pat_01_a_0000.nii.gz", "pat_02_0000.nii.gz"]
    assert report(ds)["pat 01/a"]["case_id"] == "pat_01_a"


def test_test_fraction_stratified_by_site_and_seeded(tmp_path):
    manifest = make_cohort(tmp_path / "src", n=12, sites=3)
    ds = convert_multisite(manifest, 514, "Ts", tmp_path / "raw", test_fraction=0.25, seed=3, progress=False)
    rows = read_rows(ds / "cases.csv")
    test = sorted(r["case_id"] for r in rows if r["split"] == "test")
    assert len(test) == 3
    assert sorted(r["site"] for r in rows if r["split"] == "test") == ["site0", "site1", "site2"]
    assert {p.name for p in (ds / "imagesTs").iterdir()} == {f"{c}_0000.nii.gz" for c in test}
    assert {p.name for p in (ds / "labelsTs").iterdir()} == {f"{c}.nii.gz" for c in test}
    assert json.loads((ds / "dataset.json").read_text(encoding="utf-8"))["numTraining"] == 9
    ds2 = convert_multisite(manifest, 515, "Ts2", tmp_path / "raw", test_fraction=0.25, seed=3, progress=False)
    assert sorted(r["case_id"] for r in read_rows(ds2 / "cases.csv") if r["split"] == "test") == test


def test_split_column_overrides_and_unlabelled_to_imagests(tmp_path):
    root = tmp_path / "src"
    make_cohort(root, n=4)
    rows = read_rows(root / "manifest.csv")
    rows[0]["split"] = "test"
    rows[1]["split"] = "Train"
    rows[2]["mask"] = ""  # unlabelled scan
    rows[3]["split"] = ""
    ds = convert_multisite(write_manifest(root / "m2.csv", rows), 516, "Split", tmp_path / "raw",
                           test_fraction=0.0, progress=False)
    by = {r["case_id"]: r for r in read_rows(ds / "cases.csv")}
    assert (by["sub00"]["split"], by["sub01"]["split"], by["sub02"]["split"], by["sub03"]["split"]) == \
        ("test", "train", "test", "train")
    assert (ds / "imagesTs" / "sub02_0000.nii.gz").is_file() and not (ds / "labelsTs" / "sub02.nii.gz").exists()
    assert by["sub02"]["volume_ml"] == "" and "unlabelled" in report(ds)["sub02"]["notes"]


def test_reorientation(tmp_path):
    img, mask = make_pair(direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))  # RAS-like storage
    write(img, tmp_path / "i.nii.gz")
    write(mask, tmp_path / "m.nii.gz")
    rows = [{"subject_id": "a", "image": "i.nii.gz", "mask": "m.nii.gz", "site": "s", "age": "", "sex": ""}]
    ds = convert_multisite(write_manifest(tmp_path / "m.csv", rows), 517, "Orient", tmp_path / "raw",
                           reorient="LPS", progress=False)
    out = sitk.ReadImage(str(ds / "imagesTr" / "a_0000.nii.gz"))
    lab = sitk.ReadImage(str(ds / "labelsTr" / "a.nii.gz"))
    assert sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(out.GetDirection()) == "LPS"
    np.testing.assert_allclose(out.GetDirection(), np.eye(3).ravel(), atol=1e-6)
    # same physical content: voxel (0,0,0) of the source is at the far corner of the output
    src = sitk.ReadImage(str(tmp_path / "i.nii.gz"))
    p = src.TransformIndexToPhysicalPoint((0, 0, 0))
    assert out[out.TransformPhysicalPointToIndex(p)] == src[0, 0, 0]
    np.testing.assert_array_equal(np.sort(sitk.GetArrayViewFromImage(out), axis=None),
                                  np.sort(sitk.GetArrayViewFromImage(src), axis=None))
    assert lab.GetDirection() == out.GetDirection() and lab.GetOrigin() == out.GetOrigin()
    assert "reoriented RAS -> LPS" in report(ds)["a"]["notes"]
    assert json.loads((ds / "dataset.json").read_text(encoding="utf-8"))["nnunet_iph_conversion"]["options"]["reorient"] == "LPS"
    # already canonical: no reorientation needed, byte copy kept
    ds2 = convert_multisite(ds.parent.parent / "m.csv", 518, "Orient2", tmp_path / "raw2", reorient="RAS",
                            progress=False)
    assert (ds2 / "imagesTr" / "a_0000.nii.gz").read_bytes() == (tmp_path / "i.nii.gz").read_bytes()


def test_invalid_arguments(tmp_path):
    manifest = make_cohort(tmp_path / "src", n=2)
    with pytest.raises(ValueError, match="orientation"):
        convert_multisite(manifest, 519, "X", tmp_path / "raw", reorient="LPX")
    with pytest.raises(ValueError, match="1..999"):
        convert_multisite(manifest, 1000, "X", tmp_path / "raw")
    with pytest.raises(ValueError, match="dataset name"):
        convert_multisite(manifest, 519, "bad name", tmp_path / "raw")
    with pytest.raises(ValueError, match=r"test_fraction must be in \[0, 1\)"):
        convert_multisite(manifest, 519, "X", tmp_path / "raw", test_fraction=1.0)
    with pytest.raises(FileNotFoundError, match="manifest .*nope.csv: file not found"):
        convert_multisite(tmp_path / "nope.csv", 519, "X", tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_raw_root_from_env_and_id_clash(tmp_path, monkeypatch):
    manifest = make_cohort(tmp_path / "src", n=2)
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "envraw"))
    ds = convert_multisite(manifest, 520, "Env", progress=False)
    assert ds.parent == (tmp_path / "envraw").resolve()
    with pytest.raises(ValueError, match="dataset id 520 is already used by Dataset520_Env"):
        convert_multisite(manifest, 520, "Other", progress=False)
    (tmp_path / "envraw" / "Dataset521_Foreign").mkdir()
    (tmp_path / "envraw" / "Dataset521_Foreign" / "dataset.json").write_text("{}")
    with pytest.raises(ValueError, match="not written by nnunet-iph convert"):
        convert_multisite(manifest, 521, "Foreign", progress=False)


def test_cli_multisite_and_install_splits(tmp_path, capsys):
    from nnunet_iph.cli import main

    manifest = make_cohort(tmp_path / "src", n=6)
    pre = tmp_path / "pre"
    rc = main(["convert", "multisite", str(manifest), "--dataset-id", "522", "--name", "Cli", "--raw-root",
               str(tmp_path / "raw"), "--workers", "2", "--test-fraction", "0.34", "--no-progress"])
    assert rc == 0
    ds = tmp_path / "raw" / "Dataset522_Cli"
    assert capsys.readouterr().out.strip().endswith(str(ds.resolve()))
    assert len(list((ds / "imagesTs").iterdir())) == 2
    rc = main(["convert", "install-splits", "-d", "522", "--raw-root", str(tmp_path / "raw"),
               "--preprocessed-root", str(pre)])
    assert rc == 0
    assert json.loads((pre / "Dataset522_Cli" / "splits_final.json").read_text(encoding="utf-8")) == \
        json.loads((ds / "splits_final.json").read_text(encoding="utf-8"))
    # bad input -> clean error, exit 2
    rc = main(["convert", "multisite", str(tmp_path / "missing.csv"), "-d", "523", "--name", "E",
               "--raw-root", str(tmp_path / "raw")])
    assert rc == 2
    assert "missing.csv: file not found" in capsys.readouterr().err
