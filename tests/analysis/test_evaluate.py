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


# --------------------------------------------------------------------------------------------
# damaged and non-label inputs, unusable outputs

def evaluate_cli(ref, pred, out, *extra: str) -> int:
    return main(["evaluate", str(ref), str(pred), "-o", str(out), "-q", "--num-workers", "1", *extra])


def _cut(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_truncated_prediction_is_refused_by_the_cli(folders, tmp_path):
    from tests.conftest import run_cli

    ref, pred = folders
    _cut(pred / "c4.nii.gz", 0.5)  # SimpleITK reads the half file: Dice 0.27 and no warning before
    out = tmp_path / "out" / "m.csv"
    proc = run_cli("nnunet-iph", "evaluate", str(ref), str(pred), "-o", str(out), "-q", "--num-workers", "1",
                   check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"prediction {pred / 'c4.nii.gz'}: truncated" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("role", ["reference", "prediction"])
@pytest.mark.parametrize("keep", [0.0, 0.6])
def test_empty_or_truncated_files_name_the_file(folders, tmp_path, capsys, role, keep):
    ref, pred = folders
    bad = (ref if role == "reference" else pred) / "c1.nii.gz"
    _cut(bad, keep)
    out = tmp_path / "m.csv"
    workers = "2" if role == "prediction" and keep else "1"  # one run: the error crosses the process pool
    assert main(["evaluate", str(ref), str(pred), "-o", str(out), "-q", "--num-workers", workers]) == 2
    err = capsys.readouterr().err
    assert f"{role} {bad}:" in err and ("empty file" in err if keep == 0 else "truncated" in err)
    assert not out.exists() and not (tmp_path / "m_summary.json").exists()


def test_probability_maps_are_refused_unless_thresholded(folders, tmp_path, capsys):
    ref, pred = folders
    for case in ("c1", "c4"):  # probabilities 0.1 outside, 0.9 inside the lesion
        img = sitk.GetImageFromArray((lesion() * 0.8 + 0.1).astype(np.float32))
        img.SetSpacing(SPACING_XYZ)
        sitk.WriteImage(img, str(pred / f"{case}.nii.gz"))
    assert evaluate_cli(ref, pred, tmp_path / "m.csv") == 2
    err = capsys.readouterr().err
    assert "prediction" in err and "not a label map" in err and "0.1, 0.9" in err and "--threshold" in err
    table = evaluate_folders(ref, pred, threshold=0.5, progress=False)
    assert 0 not in table["label"].tolist()  # before: int(0.1) made background a scored "label 0", Dice 1
    assert table.set_index("case").loc[["c1", "c4"], "dice"].tolist() == [1.0, 1.0]


def test_background_is_scored_only_when_asked(folders):
    ref, pred = folders
    assert set(evaluate_folders(ref, pred, progress=False)["label"]) == {1}
    asked = evaluate_folders(ref, pred, labels=["0", "1"], progress=False)
    assert asked["label"].tolist()[:2] == [0, 1]


def test_255_masks_against_dataset_json_are_refused_unless_mapped(tmp_path, capsys):
    ref, pred = tmp_path / "ds" / "labelsTr", tmp_path / "pred"
    for case in ("a", "b"):
        write(lesion(), ref / f"{case}.nii.gz")
        write(lesion() * 255, pred / f"{case}.nii.gz")
    (tmp_path / "ds" / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "blood": 1}}))
    out = tmp_path / "m.csv"
    assert evaluate_cli(ref, pred, out) == 2  # before: every case "empty"
    err = capsys.readouterr().err
    assert f"prediction {pred / 'a.nii.gz'}: label values 255" in err and "--map-label 255=" in err
    assert evaluate_cli(ref, pred, out, "--map-label", "255=1") == 0
    table = pd.read_csv(out)
    assert table["dice"].tolist() == [1.0, 1.0] and not table["empty_pred"].any()
    summary = json.loads((tmp_path / "m_summary.json").read_text(encoding="utf-8"))
    assert summary["options"]["values"]["value_map"] == [[255, 1]]
    assert evaluate_cli(ref, pred, out, "--map-label", "255") == 2
    assert "expected VALUE=LABEL" in capsys.readouterr().err


def test_unreadable_dataset_json_names_the_file(folders, tmp_path, capsys):
    ref, pred = folders
    (tmp_path / "dataset.json").write_text('{"labels": {"blood": "one"}}')
    assert evaluate_cli(ref, pred, tmp_path / "m.csv") == 2
    assert "dataset.json" in capsys.readouterr().err
    (tmp_path / "dataset.json").write_text('{"labels": {"0": "background", "1": "blood"}}')  # nnU-Net v1 style
    assert labels_from_dataset_json(tmp_path / "dataset.json") == [1]


def test_unusable_outputs_fail_before_any_work(folders, tmp_path, capsys, monkeypatch):
    from nnunet_iph.analysis import output_paths

    ref, pred = folders
    folder = tmp_path / "existing"
    folder.mkdir()
    assert evaluate_cli(ref, pred, folder) == 2
    assert f"per-case CSV {folder}: is a folder" in capsys.readouterr().err
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    assert evaluate_cli(ref, pred, a_file / "m.csv") == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert evaluate_cli(ref, pred, tmp_path / "m.csv", "--summary", str(folder)) == 2
    assert f"summary JSON {folder}: is a folder" in capsys.readouterr().err
    assert not (tmp_path / "m.csv").exists()  # nothing half written

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(output_paths.tempfile, "mkstemp", refuse)  # a read-only folder (also for root)
    assert evaluate_cli(ref, pred, tmp_path / "ro" / "m.csv") == 2
    assert "cannot write to" in capsys.readouterr().err


def test_colour_images_are_refused_naming_the_file(folders, tmp_path, capsys):
    ref, pred = folders
    rgb = sitk.GetImageFromArray(np.zeros((8, 32, 32, 3), np.uint8), isVector=True)
    rgb.SetSpacing(SPACING_XYZ)
    sitk.WriteImage(rgb, str(pred / "c1.nii.gz"))
    assert evaluate_cli(ref, pred, tmp_path / "m.csv") == 2
    assert f"prediction {pred / 'c1.nii.gz'}: not a label map (3D, 3 value(s) per voxel" in capsys.readouterr().err
