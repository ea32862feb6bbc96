"""INSTANCE 2022 layout: data/ + label/, unlabelled sets to imagesTs, defects reported."""

from __future__ import annotations

import json

import pytest

from conversion_fixtures import assert_no_partial_output, assert_same_image, make_pair, read_rows, report, write
from nnunet_iph.dataset_conversion import convert_instance


def _set(root, ids, labelled=True, missing_label=()):
    for i in ids:
        img, msk = make_pair(seed=i, lesion=1 + i % 3)
        write(img, root / "data" / f"{i:03d}.nii.gz")
        if labelled and i not in missing_label:
            write(msk, root / "label" / f"{i:03d}.nii.gz")


def test_instance_flat_layout_with_test_dir(tmp_path):
    _set(tmp_path / "train_2", range(1, 7), missing_label=(4,))
    _set(tmp_path / "valid", [1, 101, 102], labelled=False)
    ds = convert_instance(tmp_path / "train_2", 580, "Instance", tmp_path / "raw", test_dirs=[tmp_path / "valid"],
                          progress=False)
    rep = report(ds)
    assert rep["004"]["fate"] == "skipped" and "label/004.nii.gz: file not found" in rep["004"]["reason"]
    cases = {r["case_id"]: r for r in read_rows(ds / "cases.csv")}
    assert {c for c, r in cases.items() if r["split"] == "train"} == {"001", "002", "003", "005", "006"}
    # an unlabelled id that clashes with a training id is qualified with its folder name
    assert {c for c, r in cases.items() if r["split"] == "test"} == {"valid_001", "101", "102"}
    assert not (ds / "labelsTs").exists()
    assert cases["101"]["site"] == "INSTANCE2022" and cases["101"]["source_set"] == "valid"
    assert_same_image(tmp_path / "train_2" / "data" / "002.nii.gz", ds / "imagesTr" / "002_0000.nii.gz")
    assert_same_image(tmp_path / "train_2" / "label" / "002.nii.gz", ds / "labelsTr" / "002.nii.gz")
    dj = json.loads((ds / "dataset.json").read_text(encoding="utf-8"))
    assert dj["numTraining"] == 5 and dj["numTest"] == 3
    assert_no_partial_output(ds)


def test_instance_nested_layout(tmp_path):
    _set(tmp_path / "INSTANCE" / "train", range(1, 4))
    _set(tmp_path / "INSTANCE" / "validation", [201, 202], labelled=False)
    (tmp_path / "INSTANCE" / "train" / "label" / "999.nii.gz").write_bytes(
        (tmp_path / "INSTANCE" / "train" / "label" / "001.nii.gz").read_bytes())
    ds = convert_instance(tmp_path / "INSTANCE", 581, "InstanceNested", tmp_path / "raw", progress=False)
    cases = {r["case_id"]: r["split"] for r in read_rows(ds / "cases.csv")}
    assert cases == {"001": "train", "002": "train", "003": "train", "201": "test", "202": "test"}
    assert "has no image in" in report(ds)["999"]["reason"]


def test_instance_layout_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: no data/ folder"):
        convert_instance(tmp_path / "empty", 582, "E", tmp_path / "raw")
    with pytest.raises(FileNotFoundError, match="folder not found"):
        convert_instance(tmp_path / "nope", 582, "E", tmp_path / "raw")
