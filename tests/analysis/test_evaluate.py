"""``nnunet-iph evaluate``: pairing, geometry checks, per-case table, summary with empty counts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

sitk = pytest.importorskip("SimpleITK")

from nnunet_iph.analysis import metrics as M  # noqa: E402
from nnunet_iph.analysis.evaluate import evaluate_folders, find_cases, labels_from_dataset_json  # noqa: E402
from nnunet_iph.cli import main  # noqa: E402

SPACING_XYZ = (0.45, 0.45, 5.0)


def write(arr, path, spacing=SPACING_XYZ, origin=(0.0, 0.0, 0.0)):
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))


def lesion(shape=(8, 32, 32)):
    a = np.zeros(shape, np.uint8)
    a[2:5, 8:18, 8:20] = 1
    return a


@pytest.fixture
def folders(tmp_path):
    """5 cases: correct negative, shifted, missed (empty prediction), with a false positive, exact."""
    ref, pred = tmp_path / "labelsTr", tmp_path / "pred"
    empty = np.zeros((8, 32, 32), np.uint8)
    cases = {"c0": (empty, empty), "c1": (lesion(), np.roll(lesion(), 1, axis=2)), "c2": (lesion(), empty),
             "c3": (empty, lesion()), "c4": (lesion(), lesion())}
    for name, (r, p) in cases.items():
        write(r, ref / f"{name}.nii.gz")
        write(p, pred / f"{name}.nii.gz")
    return ref, pred


def test_evaluate_cli_writes_table_and_summary(folders, tmp_path, capsys):
    ref, pred = folders
    out = tmp_path / "out" / "metrics.csv"
    assert main(["evaluate", str(ref), str(pred), "-o", str(out), "--num-workers", "1", "-q"]) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == M.metric_columns(2.0)
    assert table["case"].tolist() == ["c0", "c1", "c2", "c3", "c4"] and (table["label"] == 1).all()
    t = table.set_index("case")
    assert t.loc["c0", "dice"] == 1.0 and t.loc["c4", "dice"] == 1.0 and t.loc["c2", "dice"] == 0.0
    assert t.loc["c1", "dice"] == pytest.approx(2 * 110 / 240)
    diag = M.image_diagonal_mm((8, 32, 32), (5.0, 0.45, 0.45))
    assert t.loc["c2", "hd95_mm"] == pytest.approx(diag, rel=1e-6)  # missed: worst case, never 0 mm
    assert bool(t.loc["c2", "empty_pred"]) and bool(t.loc["c3", "empty_ref"])
    assert t.loc["c3", "lesions_false_positive"] == 1 and t.loc["c2", "lesions_missed"] == 1

    summary = json.loads((tmp_path / "out" / "metrics_summary.json").read_text(encoding="utf-8"))
    entry = summary["per_label"]["1"]
    assert entry["empty_cases"] == {"both_empty": 1, "ref_empty_pred_not": 1, "pred_empty_ref_not": 1,
                                    "both_non_empty": 2}
    assert entry["all_cases"]["dice"]["mean"] == pytest.approx(table["dice"].mean())
    assert entry["all_cases"]["dice"]["sd"] == pytest.approx(table["dice"].std())
    assert entry["all_cases"]["dice"]["n"] == 5
    positive = table[~table["empty_ref"]]
    assert entry["reference_positive_cases"]["dice"]["mean"] == pytest.approx(positive["dice"].mean())
    assert entry["all_cases"]["rvd"]["n_nan"] == 1  # reference empty, prediction not: undefined
    assert summary["options"]["surface"] == "surfel" and summary["options"]["hd95_variant"] == "max_directed"
    assert {"numpy", "scipy", "SimpleITK", "nnunet_iph"} <= set(summary["versions"])


def test_options_reach_the_table(folders, tmp_path):
    ref, pred = folders
    a = evaluate_folders(ref, pred, surface="voxel", nsd_tolerance_mm=0.5, empty_penalty="nan", progress=False)
    assert "nsd_0.5mm" in a.columns and np.isnan(a.set_index("case").loc["c2", "hd95_mm"])
    b = evaluate_folders(ref, pred, surface="surfel", progress=False)
    assert a["dice"].tolist() == b["dice"].tolist()


def test_unmatched_files_are_errors(folders, tmp_path, capsys):
    ref, pred = folders
    (pred / "c1.nii.gz").rename(pred / "extra.nii.gz")
    assert main(["evaluate", str(ref), str(pred), "-o", str(tmp_path / "m.csv"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "extra.nii.gz" in err and "c1.nii.gz" in err
    (pred / "extra.nii.gz").unlink()
    table = evaluate_folders(ref, pred, subset=True, progress=False)  # one fold: fewer predictions
    assert table["case"].tolist() == ["c0", "c2", "c3", "c4"]


def test_geometry_mismatch_names_the_file(folders, tmp_path):
    ref, pred = folders
    write(lesion(), pred / "c4.nii.gz", origin=(0.0, 0.0, 10.0))
    with pytest.raises(ValueError, match="c4.nii.gz.*origin"):
        evaluate_folders(ref, pred, progress=False)
    write(lesion((8, 32, 30)), pred / "c4.nii.gz")
    with pytest.raises(ValueError, match="c4.nii.gz.*size"):
        evaluate_folders(ref, pred, progress=False)


def test_multilabel_rows_and_dataset_json(tmp_path):
    ref, pred = tmp_path / "ds" / "labelsTr", tmp_path / "pred"
    a = lesion()
    a[6, 20:24, 20:24] = 2
    b = lesion()  # label 2 missed
    write(a, ref / "x.nii.gz")
    write(b, pred / "x.nii.gz")
    write(lesion(), ref / "y.nii.gz")  # no label 2 at all
    write(lesion(), pred / "y.nii.gz")
    (tmp_path / "ds" / "dataset.json").write_text(json.dumps(
        {"labels": {"background": 0, "blood": 1, "edema": 2, "all": [1, 2]}, "file_ending": ".nii.gz"}))
    assert labels_from_dataset_json(tmp_path / "ds" / "dataset.json") == [1, 2, (1, 2)]
    table = evaluate_folders(ref, pred, progress=False)
    assert [(r.case, str(r.label)) for r in table.itertuples()] == [
        ("x", "1"), ("x", "2"), ("x", "1+2"), ("y", "1"), ("y", "2"), ("y", "1+2")]
    t = table.assign(label=table["label"].astype(str)).set_index(["case", "label"])
    assert t.loc[("x", "2"), "dice"] == 0.0 and bool(t.loc[("x", "2"), "empty_pred"])
    assert t.loc[("y", "2"), "dice"] == 1.0 and bool(t.loc[("y", "2"), "empty_ref"])
    only1 = evaluate_folders(ref, pred, labels=["1"], progress=False)
    assert only1["label"].tolist() == [1, 1]


def test_parallel_equals_serial(folders):
    ref, pred = folders
    serial = evaluate_folders(ref, pred, num_workers=1, progress=False)
    parallel = evaluate_folders(ref, pred, num_workers=2, progress=False)
    pd.testing.assert_frame_equal(serial, parallel)


def test_find_cases_ignores_other_files(tmp_path):
    write(lesion(), tmp_path / "a.nii.gz")
    (tmp_path / "summary.json").write_text("{}")
    (tmp_path / "a.npz").write_bytes(b"")
    assert list(find_cases(tmp_path)) == ["a"]
    with pytest.raises(FileNotFoundError):
        find_cases(tmp_path / "missing")
