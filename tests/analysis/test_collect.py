"""Collection of an nnU-Net results tree into the tidy per-case table; strict case bookkeeping."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from nnunet_iph.analysis import collect as C

CASES = ["c00", "c01", "c02", "c03"]
SPACING = (0.5, 0.5, 2.0)  # x, y, z in mm -> 0.5 uL voxels


def write_mask(arr: np.ndarray, path: Path) -> None:
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.SetSpacing(SPACING)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), useCompression=True)


def reference(i: int) -> np.ndarray:
    a = np.zeros((4, 12, 12), np.uint8)
    a[1:3, 2:6 + i, 2:8] = 1
    return a


def prediction(i: int, shift: int) -> np.ndarray:
    return np.roll(reference(i), shift, axis=2)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def write_summary(folder: Path, ref_dir: Path, cases: list[str], shift: int) -> None:
    entries = []
    for c in cases:
        i = int(c[1:])
        r, p = reference(i).astype(bool), prediction(i, shift).astype(bool)
        tp, fp, fn = int((r & p).sum()), int((~r & p).sum()), int((r & ~p).sum())
        tn = int(r.size - tp - fp - fn)
        entries.append({"prediction_file": str(folder / f"{c}.nii.gz"), "reference_file": str(ref_dir / f"{c}.nii.gz"),
                        "metrics": {"1": {"Dice": 2 * tp / (2 * tp + fp + fn), "IoU": tp / (tp + fp + fn), "FN": fn,
                                          "FP": fp, "TP": tp, "TN": tn, "n_pred": int(p.sum()), "n_ref": int(r.sum())}}})
    (folder / "summary.json").write_text(json.dumps({"metric_per_case": entries, "mean": {}, "foreground_mean": {}}))


def build_results(root: Path) -> dict[str, Path]:
    """A tiny nnU-Net tree: 2 configurations x 2 folds + 1 ensemble, 4 cases, labels, images, cases.csv."""
    raw = root / "raw" / "Dataset900_Fake"
    labels, images = raw / "labelsTr", raw / "imagesTr"
    for i, c in enumerate(CASES):
        write_mask(reference(i), labels / f"{c}.nii.gz")
        ct = np.full((4, 12, 12), 30.0, np.float32)
        ct[reference(i) > 0] = 70.0
        img = sitk.GetImageFromArray(ct)
        img.SetSpacing(SPACING)
        images.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(img, str(images / f"{c}_0000.nii.gz"))
    ds = root / "results" / "Dataset900_Fake"
    folds = {"0": CASES[:2], "1": CASES[2:]}
    for config, shift in (("2d", 0), ("3d_fullres", 1)):
        tdir = ds / f"nnUNetTrainer__nnUNetPlans__{config}"
        tdir.mkdir(parents=True)
        (tdir / "dataset.json").write_text(json.dumps({"file_ending": ".nii.gz", "labels": {"background": 0, "ich": 1}}))
        for fold, cases in folds.items():
            val = tdir / f"fold_{fold}" / "validation"
            for c in cases:
                write_mask(prediction(int(c[1:]), shift), val / f"{c}.nii.gz")
            write_summary(val, labels, cases, shift)
    ens = ds / "ensembles" / "ensemble___nnUNetTrainer__nnUNetPlans__2d___nnUNetTrainer__nnUNetPlans__3d_fullres___0_1"
    for c in CASES:
        write_mask(prediction(int(c[1:]), 2), ens / f"{c}.nii.gz")
    write_summary(ens, labels, CASES, 2)
    cases_csv = root / "cases.csv"
    # like the converter's cases.csv: split / fold / patient_id clash with or extend the table's columns
    pd.DataFrame({"case_id": CASES, "patient_id": CASES, "split": "train", "fold": [0, 0, 1, 1],
                  "site": ["A", "B", "A", "B"], "age": [50, 60, 70, 80], "sex": ["M", "F", "F", "M"],
                  "volume_ml": [reference(i).sum() * 0.5e-3 for i in range(4)], "IPH": [1, 1, 0, 1]}).to_csv(
        cases_csv, index=False)
    return {"results": root / "results", "dataset": ds, "labels": labels, "images": images, "cases": cases_csv,
            "raw": root / "raw"}


@pytest.fixture()
def tree(tmp_path) -> dict[str, Path]:
    return build_results(tmp_path)


def test_discover_sources(tree):
    srcs = C.discover_sources(tree["results"])
    keys = [(s.model, s.plans, s.configuration, s.fold) for s in srcs]
    assert keys == [("nnUNetTrainer", "nnUNetPlans", "2d", "0"), ("nnUNetTrainer", "nnUNetPlans", "2d", "1"),
                    ("nnUNetTrainer", "nnUNetPlans", "3d_fullres", "0"),
                    ("nnUNetTrainer", "nnUNetPlans", "3d_fullres", "1"),
                    ("nnUNetTrainer", "nnUNetPlans", "2d+3d_fullres", "ensemble_0_1")]
    assert all(s.dataset == "Dataset900_Fake" and s.split == "validation" for s in srcs)
    assert len(C.discover_sources(tree["dataset"])) == 5
    assert len(C.discover_sources(tree["results"], dataset=900)) == 5
    assert len(C.discover_sources(tree["results"], folds=[0], include_ensembles=False)) == 2
    assert len(C.discover_sources(tree["dataset"] / "nnUNetTrainer__nnUNetPlans__2d")) == 2
    with pytest.raises(FileNotFoundError, match="no nnU-Net validation"):
        C.discover_sources(tree["results"], dataset=901)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        C.discover_sources(tree["results"] / "nope")


def test_collect_from_summary_json(tree):
    col = C.collect(C.discover_sources(tree["results"]), tree["cases"], metric_source="summary")
    t = col.table
    assert len(t) == 12 and set(t["system"]) == {"2d", "3d_fullres", "ensemble 2d+3d_fullres"}
    assert t["row"].tolist()[:1] == ["2d"]
    row = t[(t["configuration"] == "3d_fullres") & (t["case"] == "c02")].iloc[0]
    assert row["dice"] == pytest.approx(dice(reference(2).astype(bool), prediction(2, 1).astype(bool)))
    assert row["fold"] == "1" and row["site"] == "A" and row["age"] == 70 and row["IPH"] == 0
    assert row["split"] == "validation" and row["split_case"] == "train" and row["fold_case"] == 1
    assert row["reference_volume_ml"] == pytest.approx(reference(2).sum() * 0.5e-3)
    assert (t.loc[t["configuration"] == "2d", "dice"] == 1.0).all()
    assert list(t.columns[:10]) == ["dataset", "split", "model", "plans", "configuration", "fold", "system", "row",
                                    "case", "label"]


def test_duplicated_case_is_an_error(tree):
    val0 = tree["dataset"] / "nnUNetTrainer__nnUNetPlans__2d" / "fold_0" / "validation"
    val1 = tree["dataset"] / "nnUNetTrainer__nnUNetPlans__2d" / "fold_1" / "validation"
    shutil.copy(val0 / "c00.nii.gz", val1 / "c00.nii.gz")
    write_summary(val1, tree["labels"], ["c00", "c02", "c03"], 0)
    with pytest.raises(ValueError, match=r"duplicated cases[\s\S]*case c00 of nnUNetTrainer__nnUNetPlans__2d"):
        C.collect(C.discover_sources(tree["results"]), tree["cases"], metric_source="summary")


def test_missing_case_is_an_error_unless_allowed(tree):
    val1 = tree["dataset"] / "nnUNetTrainer__nnUNetPlans__3d_fullres" / "fold_1" / "validation"
    (val1 / "c03.nii.gz").unlink()
    write_summary(val1, tree["labels"], ["c02"], 1)
    srcs = C.discover_sources(tree["results"])
    with pytest.raises(ValueError, match=r"missing cases[\s\S]*3d_fullres \(validation\) lacks 1 of 4 case\(s\): \['c03'\]"):
        C.collect(srcs, tree["cases"], metric_source="summary")
    col = C.collect(srcs, tree["cases"], metric_source="summary", allow_missing=True)
    assert len(col.table) == 11 and any("lacks 1 of 4" in m for m in col.messages)
    common, msgs = C.restrict_to_common_cases(col.table)
    assert len(common) == 9 and "1 case(s) not scored by every system" in msgs[0]


def test_a_fold_missing_everywhere_is_caught_against_the_labels(tree, monkeypatch):
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    for config in ("2d", "3d_fullres"):
        tdir = tree["dataset"] / f"nnUNetTrainer__nnUNetPlans__{config}"
        shutil.rmtree(tdir / "fold_1")
        for f in (1, 2, 3, 4):  # five folds were run, four validations are empty
            (tdir / f"fold_{f}" / "validation").mkdir(parents=True)
    srcs = C.discover_sources(tree["results"], include_ensembles=False)
    with pytest.raises(ValueError, match=r"lacks 2 of 4 case\(s\): \['c02', 'c03'\]"):
        C.collect(srcs, tree["cases"], metric_source="summary")


def test_selected_folds_use_splits_final(tree, tmp_path, monkeypatch):
    srcs = C.discover_sources(tree["results"], folds=[0], include_ensembles=False)
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    col = C.collect(srcs, tree["cases"], metric_source="summary")  # no splits: only across systems
    assert len(col.table) == 4 and any("completeness checked only across systems" in m for m in col.messages)
    pre = tmp_path / "pre" / "Dataset900_Fake"
    pre.mkdir(parents=True)
    (pre / "splits_final.json").write_text(json.dumps([{"train": CASES[2:], "val": ["c00", "c01", "c03"]},
                                                       {"train": CASES[:2], "val": CASES[2:]}]))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    with pytest.raises(ValueError, match=r"lacks 1 of 3 case\(s\): \['c03'\]"):
        C.collect(srcs, tree["cases"], metric_source="summary")


def test_unknown_case_and_duplicate_ids_in_cases_csv(tree, tmp_path):
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"case_id": ["c00", "c01", "c02"], "site": ["A"] * 3}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match=r"1 scored case\(s\) not in cases.csv: \['c03'\]"):
        C.collect(C.discover_sources(tree["results"]), bad, metric_source="summary")
    pd.DataFrame({"case_id": ["c00", "c00"], "site": ["A"] * 2}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="duplicated case_id"):
        C.load_cases(bad)
    pd.DataFrame({"patient": ["c00"]}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="no 'case_id' column"):
        C.load_cases(bad)
    with pytest.raises(FileNotFoundError):
        C.load_cases(tmp_path / "nope.csv")


def test_summary_source_requires_summary_json(tree):
    (tree["dataset"] / "nnUNetTrainer__nnUNetPlans__2d" / "fold_0" / "validation" / "summary.json").unlink()
    with pytest.raises(FileNotFoundError, match="summary.json not found"):
        C.collect(C.discover_sources(tree["results"]), tree["cases"], metric_source="summary")


def test_reference_dir_resolution(tree, monkeypatch):
    src = C.discover_sources(tree["results"])[0]
    monkeypatch.delenv("nnUNet_raw", raising=False)
    assert C.resolve_reference_dir(src) == tree["labels"]  # from summary.json's reference_file entries
    assert C.resolve_reference_dir(src, labels_dir="/x") == Path("/x")
    monkeypatch.setenv("nnUNet_raw", str(tree["raw"]))
    assert C.resolve_reference_dir(C.PredictionSource(Path("p"), "m", split="test", dataset="Dataset900_Fake")) is None


def test_display_columns_strip_common_plans_prefix():
    t = pd.DataFrame({"model": ["U", "U", "R", "R"], "plans": ["nnUNetPlans_axial", "nnUNetPlans_coronal"] * 2,
                      "configuration": ["2d"] * 4, "fold": ["0"] * 4})
    out = C.add_display_columns(t)
    assert out["row"].tolist() == ["axial", "coronal", "axial", "coronal"]
    assert out["system"].tolist() == ["U / axial", "U / coronal", "R / axial", "R / coronal"]
    one = C.add_display_columns(t.iloc[:1])
    assert one["row"].tolist() == ["2d"] and one["system"].tolist() == ["U"]


def test_parse_source_spec(tree):
    d = tree["dataset"] / "nnUNetTrainer__nnUNetPlans__2d" / "fold_0" / "validation"
    s = C.parse_source_spec(f"nnUNetTrainer__nnUNetPlans__2d={d}")
    assert (s.model, s.plans, s.configuration, s.split) == ("nnUNetTrainer", "nnUNetPlans", "2d", "test")
    assert C.parse_source_spec(f"mymodel={d}", split="validation").model == "mymodel"
    with pytest.raises(ValueError, match="NAME=DIR"):
        C.parse_source_spec(str(d))
    with pytest.raises(FileNotFoundError):
        C.parse_source_spec("x=/nonexistent/folder")


def test_metrics_csv_round_trip(tree, tmp_path):
    col = C.collect(C.discover_sources(tree["results"]), tree["cases"], metric_source="summary")
    path = tmp_path / "per_case.csv"
    col.table.to_csv(path, index=False)
    again = C.table_from_metrics_csvs([str(path)], tree["cases"])
    assert len(again.table) == 12 and set(again.table["system"]) == set(col.table["system"])
    assert again.table["site"].notna().all()
    plain = tmp_path / "evaluate_out.csv"
    col.table[col.table["configuration"] == "2d"][["case", "label", "dice"]].to_csv(plain, index=False)
    one = C.table_from_metrics_csvs([f"mine={plain}"], tree["cases"]).table
    assert set(one["model"]) == {"mine"} and len(one) == 4


def test_collect_with_our_evaluator(tree):
    pytest.importorskip("nnunet_iph.analysis.evaluate")
    col = C.collect(C.discover_sources(tree["results"]), tree["cases"], labels_dir=tree["labels"])
    t = col.table
    assert len(t) == 12
    for _, r in t.iterrows():
        shift = {"2d": 0, "3d_fullres": 1}.get(r["configuration"], 2)
        i = int(r["case"][1:])
        assert r["dice"] == pytest.approx(dice(reference(i).astype(bool), prediction(i, shift).astype(bool)))
        assert r["volume_ref_ml"] == pytest.approx(reference(i).sum() * 0.5e-3)
        assert r["reference_volume_ml"] == pytest.approx(r["volume_ref_ml"])
    assert {"hd95_mm", "assd_mm", "volume_pred_ml", "prediction_file", "reference_file"} <= set(t.columns)


# ------------------------------------------------------------------ malformed inputs: errors naming the file

def _first_summary(tree) -> Path:
    return tree["dataset"] / "nnUNetTrainer__nnUNetPlans__2d" / "fold_0" / "validation" / "summary.json"


def _entries(path: Path) -> list[dict]:
    return json.loads(path.read_text())["metric_per_case"]


@pytest.mark.parametrize("content,expected", [
    ("[]", "not an nnU-Net summary.json (expected an object with a 'metric_per_case' list, got a JSON list)"),
    ("{}", "got no 'metric_per_case' list"),
    ("{not json", "not a readable JSON file"),
    ('{"metric_per_case": []}', "'metric_per_case' is empty"),
    ("no_metrics", "metric_per_case[0] is malformed"),
    ("dice_text", "case c00, label 1: Dice = 'abc' is not a number"),
    ("dice_big", "case c00, label 1: Dice = 1.5 outside"),
    ("tp_negative", "case c00, label 1: TP = -3 outside"),
])
def test_malformed_summary_json_is_an_error_naming_the_file(tree, content, expected):
    path = _first_summary(tree)
    entries = _entries(path)
    if content == "no_metrics":
        del entries[0]["metrics"]
    elif content in ("dice_text", "dice_big", "tp_negative"):
        key, value = {"dice_text": ("Dice", "abc"), "dice_big": ("Dice", 1.5), "tp_negative": ("TP", -3)}[content]
        entries[0]["metrics"]["1"][key] = value
    if content in ("no_metrics", "dice_text", "dice_big", "tp_negative"):
        content = json.dumps({"metric_per_case": entries})
    path.write_text(content)
    with pytest.raises(ValueError, match=re.escape(expected)) as err:
        C.collect(C.discover_sources(tree["results"]), tree["cases"], metric_source="summary")
    assert str(path) in str(err.value)


def test_malformed_summary_json_through_the_cli(tree, tmp_path, capsys):
    from nnunet_iph.cli import main

    _first_summary(tree).write_text("[]")
    rc = main(["analyze", str(tree["results"]), "--cases", str(tree["cases"]), "-o", str(tmp_path / "o"),
               "--metric-source", "summary"])
    err = capsys.readouterr().err
    assert rc == 2 and str(_first_summary(tree)) in err and "Traceback" not in err
    assert not (tmp_path / "o" / "results.json").exists()


def test_undefined_dice_in_summary_json_stays_undefined(tree):
    path = _first_summary(tree)
    entries = _entries(path)
    entries[0]["metrics"]["1"]["Dice"] = float("nan")  # nnU-Net writes NaN when both masks are empty
    path.write_text(json.dumps({"metric_per_case": entries}))
    t = C.collect(C.discover_sources(tree["results"]), tree["cases"], metric_source="summary").table
    assert np.isnan(t.loc[(t["configuration"] == "2d") & (t["case"] == "c00"), "dice"].item())


def test_stale_summary_json_is_reported(tree):
    val = _first_summary(tree).parent
    write_summary(val, tree["labels"], ["c00"], 0)  # c01 predicted but not in summary.json
    col = C.collect(C.discover_sources(tree["results"]), tree["cases"], metric_source="summary",
                    allow_missing=True)
    assert any("1 prediction file(s) not in summary.json" in m and "c01" in m for m in col.messages)


def test_cases_csv_blank_ids_and_unreadable_files(tmp_path):
    bad = tmp_path / "cases.csv"
    bad.write_text("case_id,site\nc00,A\n,B\n")
    with pytest.raises(ValueError, match=r"cases.csv: empty case_id on line\(s\) \[3\]"):
        C.load_cases(bad)
    bad.write_text("")
    with pytest.raises(ValueError, match="cases.csv: not a readable CSV table"):
        C.load_cases(bad)
    bad.write_text("case_id,volume_ml\nc00,3.5\nc01,n/a ml\n")  # would be a silently missing volume
    with pytest.raises(ValueError, match=re.escape("cases.csv: column 'volume_ml' has non-numeric value(s) ['n/a ml']")):
        C.load_cases(bad)


def test_metrics_csv_with_text_in_a_metric_column_is_an_error(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("case,dice,hd95_mm\nc00,0.8,3\nc01,oops,inf\nc02,,nan\n")
    with pytest.raises(ValueError, match=re.escape("m.csv: column 'dice' has non-numeric value(s) ['oops'] on line(s) [3]")):
        C.load_metrics_csv(path)
    path.write_text("case,dice,hd95_mm\nc00,0.8,3\nc01,0.7,inf\nc02,,nan\n")
    df = C.load_metrics_csv(path)
    assert df["dice"].isna().sum() == 1 and np.isinf(df["hd95_mm"]).sum() == 1


def test_demographics_are_normalised_with_notes(tree, tmp_path):
    cases = pd.read_csv(tree["cases"])
    cases["sex"] = ["female", "F", "m", "x"]
    cases["age"] = ["abc", "-5", "250", "61"]
    path = tmp_path / "cases.csv"
    cases.to_csv(path, index=False)
    col = C.collect(C.discover_sources(tree["results"]), path, metric_source="summary")
    per_case = col.table.drop_duplicates("case").set_index("case")
    assert per_case["sex"].tolist() == ["F", "F", "M", None]
    assert per_case["age"].isna().tolist() == [True, True, True, False] and per_case.loc["c03", "age"] == 61.0
    notes = col.messages[col.messages.index(next(m for m in col.messages if m.startswith("demographics"))):]
    assert notes[0].startswith("demographics normalised: sex (case-insensitive):") and "female" in notes[0]
    assert "sex 'female' -> 'F' (1 case(s))" in notes and "sex 'm' -> 'M' (1 case(s))" in notes
    assert any(n.startswith("sex 'x' not recognised") and n.endswith("(1 case(s))") for n in notes)
    assert any(n.startswith("age 'abc' is not a number") for n in notes)
    assert any(n.startswith("age '-5' outside the plausible range") for n in notes)
    assert any(n.startswith("age '250' outside") for n in notes)
    assert set(col.table["sex"].dropna()) == {"F", "M"}  # two levels of the OLS sex term, not five


def test_long_ensemble_names_are_hashed_and_discovered_from_ensemble_json(tmp_path):
    """Three plane models with long trainer names exceed the 255-byte file-name limit (the MIDL recipe's
    ``nnUNetTrainerFPNAdam_fg100_30ep_50it_noTTA`` did): the folder name becomes a hash, its members are
    read back from ensemble.json."""
    from nnunet_iph.ensembling.ensemble import MAX_NAME_BYTES, ModelRef, ensemble_name

    ds = tmp_path / "Dataset610_X"
    trainer = "nnUNetTrainerFPNAdam_fg100_30ep_50it_noTTA"
    folders = [ds / f"{trainer}__nnUNetPlans_midl2026_{p}__2d_cpu_arch" for p in ("axial", "coronal", "sagittal")]
    name = ensemble_name([ModelRef(f) for f in folders], [0])
    assert len(name.encode()) <= MAX_NAME_BYTES and re.fullmatch(r"ensemble___[0-9a-f]{16}___0", name)
    short = ensemble_name([ModelRef(ds / "nnUNetTrainer__nnUNetPlans_axial__2d")] * 2, [0, 1])
    assert short == "ensemble___nnUNetTrainer__nnUNetPlans_axial__2d___nnUNetTrainer__nnUNetPlans_axial__2d___0_1"
    ens = ds / "ensembles" / name
    ens.mkdir(parents=True)
    (ens / "ensemble.json").write_text(json.dumps({"members": [str(f) for f in folders], "folds": [0]}))
    (ens / "a.nii.gz").write_bytes(b"")
    (src,) = [s for s in C.discover_sources(ds) if s.pred_dir == ens]
    assert (src.model, src.configuration, src.fold) == (trainer, "2d_cpu_arch", "ensemble_0")
    assert src.plans == "nnUNetPlans_midl2026_axial+nnUNetPlans_midl2026_coronal+nnUNetPlans_midl2026_sagittal"
