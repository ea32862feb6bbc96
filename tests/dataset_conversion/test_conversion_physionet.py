"""PhysioNet CT-ICH: a synthetic mini release, and the real copy in ../shared (skipped when absent)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from conversion_fixtures import assert_no_partial_output, assert_same_image, make_pair, read_rows, report, write
from nnunet_iph.dataset_conversion import convert_physionet
from nnunet_iph.dataset_conversion.physionet import read_slice_table

HEADER = ("PatientNumber,SliceNumber,Intraventricular,Intraparenchymal,Subarachnoid,Epidural,Subdural,"
          "No_Hemorrhage,Fracture_Yes_No")
# patient -> {slice (1-based): (ivh, iph, sah, edh, sdh, fracture)}; slices without hemorrhage omitted
MINI = {
    49: {3: (0, 1, 0, 0, 0, 1), 4: (0, 1, 0, 1, 0, 0)},  # IPH + EDH
    50: {2: (0, 1, 0, 0, 0, 0), 3: (0, 1, 0, 0, 0, 1)},  # IPH only
    51: {},  # no hemorrhage
    52: {4: (0, 0, 0, 1, 0, 0)},  # EDH only
}


def _mini_release(root: Path, mismatch: bool = False, extra_table_patient: bool = False) -> Path:
    lines = [HEADER]
    for pid, flags in MINI.items():
        img, _ = make_pair(seed=pid)
        m = np.zeros((6, 12, 10), np.uint8)
        for k in flags:
            m[k - 1, 5:7, 5:7] = 1
        if mismatch and pid == 50:
            m[5, 1, 1] = 1  # slice 6 has mask voxels the table does not flag
        mask = sitk.GetImageFromArray(m)
        mask.CopyInformation(img)
        write(img, root / "ct_scans" / f"{pid:03d}.nii")
        write(mask, root / "masks" / f"{pid:03d}.nii")
        for k in range(1, 7):
            f = flags.get(k)
            row = f[:5] + (0, f[5]) if f else (0, 0, 0, 0, 0, 1, 0)
            lines.append(",".join(map(str, (pid, k, *row))))
    if extra_table_patient:
        lines += [f"53,{k},0,0,0,0,0,1,0" for k in range(1, 4)]
    (root / "hemorrhage_diagnosis_raw_ct.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return root


def test_mini_release_all_cohort(tmp_path):
    src = _mini_release(tmp_path / "ctich", extra_table_patient=True)
    (src / "Patient_demographics.csv").write_text(
        "Patient Number,\"Age\n(years)\",Gender,Hemorrhage type,,\n,,,Intraventricular,Intraparenchymal\n"
        "49,35,Male,0,1\n50,11,Female,0,1\n")
    ds = convert_physionet(src, 590, "CTICHMini", tmp_path / "raw", progress=False)
    cases = {r["case_id"]: r for r in read_rows(ds / "cases.csv")}
    assert sorted(cases) == ["049", "050", "051", "052"]
    assert "no CT file 053.nii[.gz]" in report(ds)["053"]["reason"]
    flags = {c: tuple(int(r[k]) for k in ("ivh", "iph", "sah", "edh", "sdh", "fracture", "any_hemorrhage"))
             for c, r in cases.items()}
    assert flags == {"049": (0, 1, 0, 1, 0, 1, 1), "050": (0, 1, 0, 0, 0, 1, 1), "051": (0, 0, 0, 0, 0, 0, 0),
                     "052": (0, 0, 0, 1, 0, 0, 1)}
    assert (cases["049"]["subtypes"], cases["049"]["hemorrhage_slices"], cases["049"]["iph_slices"]) == ("IPH+EDH", "2", "2")
    assert (cases["049"]["age"], cases["049"]["sex"], cases["051"]["age"]) == ("35", "M", "")  # Male -> M
    assert cases["050"]["sex"] == "F"
    assert cases["050"]["site"] == "AlHilla"
    # .nii sources land gzip-compressed, voxel-identical, same geometry
    assert_same_image(src / "ct_scans" / "049.nii", ds / "imagesTr" / "049_0000.nii.gz")
    assert_same_image(src / "masks" / "049.nii", ds / "labelsTr" / "049.nii.gz")
    assert all(not r["notes"] for r in read_rows(ds / "conversion_report.csv"))
    dj = json.loads((ds / "dataset.json").read_text(encoding="utf-8"))
    assert dj["nnunet_iph_conversion"]["options"]["cohort"] == "all" and "Hssayeni" in dj["reference"]
    assert_no_partial_output(ds)


def test_mini_release_iph_cohort(tmp_path):
    src = _mini_release(tmp_path / "ctich")
    ds = convert_physionet(src, 591, "CTICHMiniIPH", tmp_path / "raw", cohort="iph", progress=False)
    assert [r["case_id"] for r in read_rows(ds / "cases.csv")] == ["050"]
    rep = report(ds)
    assert rep["049"]["fate"] == "excluded" and "IPH plus other subtypes (EDH)" in rep["049"]["reason"]
    assert rep["051"]["fate"] == "excluded" and "no hemorrhage" in rep["051"]["reason"]
    assert rep["052"]["fate"] == "excluded" and "no intraparenchymal hemorrhage (has EDH)" in rep["052"]["reason"]
    # exclusions are not defects: strict still passes
    convert_physionet(src, 592, "CTICHMiniIPHStrict", tmp_path / "raw", cohort="iph", strict=True, progress=False)
    ds = convert_physionet(src, 593, "CTICHMiniIPHNeg", tmp_path / "raw", cohort="iph", iph_include_negatives=True,
                           progress=False)
    assert [r["case_id"] for r in read_rows(ds / "cases.csv")] == ["050", "051"]


def test_mask_vs_slice_table_mismatch_is_reported(tmp_path):
    src = _mini_release(tmp_path / "ctich", mismatch=True)
    ds = convert_physionet(src, 594, "CTICHMis", tmp_path / "raw", progress=False)
    note = report(ds)["050"]["notes"]
    assert "mask slices with hemorrhage differ from the slice table (only mask: [6], only table: []; 1-based SliceNumber)" in note


def test_slice_table_errors(tmp_path):
    (tmp_path / "t.csv").write_text("PatientNumber,SliceNumber\n1,1\n")
    with pytest.raises(ValueError, match=r"t\.csv: missing column\(s\) Intraventricular"):
        read_slice_table(tmp_path / "t.csv")
    (tmp_path / "t.csv").write_text(HEADER + "\n49,x,0,0,0,0,0,1,0\n")
    with pytest.raises(ValueError, match=r"t\.csv line 2: SliceNumber 'x' is not a number"):
        read_slice_table(tmp_path / "t.csv")
    (tmp_path / "t.csv").write_text(HEADER + "\n49,1,0,0,0,0,0,1,0\n49,1,0,0,0,0,0,1,0\n")
    with pytest.raises(ValueError, match="patient 49 slice 1 listed twice"):
        read_slice_table(tmp_path / "t.csv")
    with pytest.raises(FileNotFoundError, match="no ct_scans/ folder"):
        convert_physionet(tmp_path, 595, "E", tmp_path / "raw")


# ---- the real copy ------------------------------------------------------------------------------

def _table_flags(csv_path: Path) -> dict[str, dict[str, int]]:
    """Per-patient flags straight from the per-slice table (independent of the converter's parser)."""
    out: dict[str, dict[str, int]] = {}
    names = {"Intraventricular": "ivh", "Intraparenchymal": "iph", "Subarachnoid": "sah", "Epidural": "edh",
             "Subdural": "sdh", "Fracture_Yes_No": "fracture"}
    with open(csv_path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            d = out.setdefault(f"{int(row['PatientNumber']):03d}", {v: 0 for v in names.values()} | {"n": 0, "h": 0})
            for col, short in names.items():
                d[short] |= int(row[col])
            d["n"] += 1
            d["h"] += row["No_Hemorrhage"].strip() == "0"
    return out


def _provenance_volumes(md: Path) -> dict[str, float]:
    vols = {}
    for line in md.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\|\s*(\d{3})\s*\|\s*\d+\s*\|[^|]*\|\s*([\d.]+)\s*\|", line)
        if m:
            vols[m.group(1)] = float(m.group(2))
    return vols


@pytest.mark.shared_data
def test_real_physionet_all_cohort(physionet_dir, tmp_path, capsys):
    ds = convert_physionet(physionet_dir, 596, "CTICH", tmp_path / "raw", num_workers=2, progress=False)
    # HU clipped to [-20, 100] (PROVENANCE.md) is HU: no CT-units warning, no warning at all
    assert "warning" not in capsys.readouterr().err
    cases = {r["case_id"]: r for r in read_rows(ds / "cases.csv")}
    assert len(cases) == 75 and json.loads((ds / "dataset.json").read_text(encoding="utf-8"))["numTraining"] == 75
    assert {r["fate"] for r in read_rows(ds / "conversion_report.csv")} == {"converted"}
    assert all(not r["notes"] for r in read_rows(ds / "conversion_report.csv"))  # masks agree with the table
    for cid in cases:  # byte-identical files: voxels, header, geometry (incl. the sheared sform of 074)
        assert (ds / "imagesTr" / f"{cid}_0000.nii.gz").read_bytes() == (physionet_dir / "ct_scans" / f"{cid}.nii.gz").read_bytes()
        assert (ds / "labelsTr" / f"{cid}.nii.gz").read_bytes() == (physionet_dir / "masks" / f"{cid}.nii.gz").read_bytes()
    for cid in ("049", "074"):
        assert_same_image(physionet_dir / "ct_scans" / f"{cid}.nii.gz", ds / "imagesTr" / f"{cid}_0000.nii.gz")
        assert_same_image(physionet_dir / "masks" / f"{cid}.nii.gz", ds / "labelsTr" / f"{cid}.nii.gz")
        a = nib.load(physionet_dir / "ct_scans" / f"{cid}.nii.gz")
        b = nib.load(ds / "imagesTr" / f"{cid}_0000.nii.gz")
        np.testing.assert_array_equal(a.header.get_sform(), b.header.get_sform())
        np.testing.assert_array_equal(a.header.get_qform(), b.header.get_qform())
        assert b.get_data_dtype() == np.int16
    table = _table_flags(physionet_dir / "hemorrhage_diagnosis_raw_ct.csv")
    assert set(table) == set(cases)
    for cid, t in table.items():
        r = cases[cid]
        for k in ("ivh", "iph", "sah", "edh", "sdh", "fracture"):
            assert int(r[k]) == t[k], (cid, k)
        assert int(r["table_slices"]) == t["n"] and int(r["hemorrhage_slices"]) == t["h"]
        assert int(r["any_hemorrhage"]) == (t["h"] > 0) == (float(r["volume_ml"]) > 0)
    assert sum(int(r["any_hemorrhage"]) for r in cases.values()) == 36
    assert [sum(int(r[k]) for r in cases.values()) for k in ("ivh", "iph", "sah", "edh", "sdh")] == [5, 16, 7, 21, 4]
    prov = _provenance_volumes(physionet_dir / "PROVENANCE.md")
    if prov:
        assert len(prov) == 75
        for cid, v in prov.items():
            assert round(float(cases[cid]["volume_ml"]), 2) == pytest.approx(v, abs=0.006), cid
    folds = json.loads((ds / "splits_final.json").read_text(encoding="utf-8"))
    assert len(folds) == 5 and sorted(c for f in folds for c in f["val"]) == sorted(cases)


@pytest.mark.shared_data
def test_real_physionet_iph_cohort(physionet_dir, tmp_path):
    table = _table_flags(physionet_dir / "hemorrhage_diagnosis_raw_ct.csv")
    expected = sorted(c for c, t in table.items()
                      if t["iph"] and not (t["ivh"] or t["sah"] or t["edh"] or t["sdh"]))
    assert expected == ["050", "058", "069", "072", "079"]
    ds = convert_physionet(physionet_dir, 597, "CTICHIPH", tmp_path / "raw", cohort="iph", progress=False)
    assert sorted(r["case_id"] for r in read_rows(ds / "cases.csv")) == expected
    rep = report(ds)
    mixed = sorted(c for c, r in rep.items() if "IPH plus other subtypes" in r["reason"])
    assert mixed == sorted(c for c, t in table.items() if t["iph"] and c not in expected)
    assert len(mixed) == 11
    assert sum(r["fate"] == "excluded" for r in rep.values()) == 70
    for cid in expected:
        assert (ds / "labelsTr" / f"{cid}.nii.gz").read_bytes() == (physionet_dir / "masks" / f"{cid}.nii.gz").read_bytes()
