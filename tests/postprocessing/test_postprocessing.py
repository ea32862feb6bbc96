"""Post-processing operations, folder application and the choice on cross-validation results."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from nnunet_iph.postprocessing import (PostprocessingConfig, apply_postprocessing, closing, fill_holes,
                                       keep_largest_components, opening, remove_small_components,
                                       structuring_element)


def test_structuring_element_from_spacing():
    disc = structuring_element(2.0, (5.0, 0.5, 0.5), "mm")  # 5 mm slices are beyond a 2 mm radius
    assert disc.shape == (1, 9, 9) and disc[0, 4].all() and not disc[0, 0, 0]
    assert disc.sum() == sum(1 for y in range(-4, 5) for x in range(-4, 5) if y * y + x * x <= 16)
    cross = structuring_element(1, (5.0, 0.5, 0.5), "voxel")
    assert cross.shape == (3, 3, 3) and cross.sum() == 7
    assert structuring_element(5.0, (5.0, 1.0, 1.0)).shape == (3, 11, 11)
    with pytest.raises(ValueError):
        structuring_element(1, (1, 1, 1), "cm")


def test_remove_small_components_by_volume():
    m = np.zeros((6, 20, 20), bool)
    m[1:3, 2:6, 2:6] = True       # 32 voxels
    m[3, 6, 6] = True             # touches by a corner: same component (26-connectivity)
    m[4, 15:17, 15:17] = True     # 4 voxels
    spacing = (5.0, 0.5, 0.5)     # 1.25 mm³ per voxel
    out = remove_small_components(m, spacing, min_volume_ml=10 * 1.25 / 1000)
    assert out.sum() == 33 and not out[4].any()
    assert remove_small_components(m, spacing, 1.0).sum() == 0
    assert remove_small_components(m, spacing, 0.0).sum() == m.sum()


def test_keep_largest_components():
    m = np.zeros((3, 20, 20), bool)
    m[1, 1:6, 1:6] = True    # 25
    m[1, 10:13, 10:13] = True  # 9
    m[1, 17, 17] = True      # 1
    assert keep_largest_components(m, 1).sum() == 25
    assert keep_largest_components(m, 2).sum() == 34
    assert keep_largest_components(m, 5).sum() == 35


def test_fill_holes_2d_and_3d():
    shell = np.zeros((7, 9, 9), bool)
    shell[1:6, 1:8, 1:8] = True
    shell[2:5, 3:6, 3:6] = False             # enclosed cavity: a 3D hole
    assert fill_holes(shell, "3d").sum() == 5 * 49
    tube = np.zeros((5, 9, 9), bool)
    tube[:, 2:7, 2:7] = True
    tube[:, 4, 4] = False                    # open along z: a hole in every slice only
    assert fill_holes(tube, "3d").sum() == tube.sum()
    assert fill_holes(tube, "2d").sum() == tube.sum() + 5


def test_opening_and_closing():
    m = np.zeros((3, 20, 20), bool)
    m[1, 5:12, 5:12] = True
    spur = m.copy()
    spur[1, 8, 12:16] = True                 # one-voxel-wide spur
    opened = opening(spur, 1, (5.0, 1.0, 1.0), "mm")  # a plus-shaped kernel in-plane
    assert not opened[1, 8, 13:16].any() and opened[1, 6:11, 5:12].all()
    assert (opened ^ opening(m, 1, (5.0, 1.0, 1.0), "mm")).sum() == 1  # only the spur's root survives
    gap = m.copy()
    gap[1, 8, :] = False                     # a one-voxel crack
    closed = closing(gap, 1, (5.0, 1.0, 1.0), "mm")
    assert closed[1, 8, 6:11].all()
    edge = np.zeros((3, 10, 10), bool)
    edge[1, 0:4, 0:4] = True                 # touching the image border
    assert np.array_equal(closing(edge, 2, (5.0, 1.0, 1.0), "voxel"), edge)


def test_apply_to_label_map_keeps_other_labels():
    arr = np.zeros((3, 20, 20), np.uint8)
    arr[1, 2:8, 2:8] = 1
    arr[1, 15, 15] = 1                       # small component of label 1
    arr[1, 10:14, 10:14] = 2
    arr[1, 12, 12] = 0                       # hole in label 2
    arr[1, 5, 5] = 2                         # label 2 speck inside label 1
    cfg = PostprocessingConfig(min_volume_ml=0.002, fill_holes="2d")
    out = apply_postprocessing(arr, (1.0, 1.0, 1.0), cfg)
    assert out[1, 15, 15] == 0 and out[1, 12, 12] == 2
    assert out[1, 5, 5] == 0                 # removed speck becomes background, label 1 keeps its hole
    assert (out == 1).sum() == 35
    assert np.array_equal(apply_postprocessing(arr, (1, 1, 1), PostprocessingConfig()), arr)
    only2 = apply_postprocessing(arr, (1.0, 1.0, 1.0), PostprocessingConfig(min_volume_ml=0.002, labels=(2,)))
    assert only2[1, 15, 15] == 1 and only2[1, 5, 5] == 0


def test_config_roundtrip_merge_and_validation():
    a = PostprocessingConfig(min_volume_ml=0.1)
    b = PostprocessingConfig(fill_holes="2d", closing_radius=1, radius_unit="voxel")
    assert PostprocessingConfig.from_dict(a.to_dict()) == a
    merged = a.merged(b)
    assert merged.min_volume_ml == 0.1 and merged.fill_holes == "2d" and merged.radius_unit == "voxel"
    assert a.merged(PostprocessingConfig(min_volume_ml=1.0)) is None
    assert "remove < 0.1 mL" in a.describe() and PostprocessingConfig().describe() == "none"
    for bad in ({"keep_largest": 0}, {"fill_holes": "4d"}, {"min_volume_ml": -1}, {"radius_unit": "cm"}):
        with pytest.raises(ValueError):
            PostprocessingConfig(**bad)
    with pytest.raises(ValueError, match="unknown"):
        PostprocessingConfig.from_dict({"min_volume": 1})


# --------------------------------------------------------------------------------------------
# folders

sitk = pytest.importorskip("SimpleITK")


def _write(arr, path, spacing=(0.5, 0.5, 5.0)):
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.SetSpacing(spacing)
    img.SetOrigin((3.0, -2.0, 1.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))


@pytest.fixture
def cv_folders(tmp_path):
    """Validation predictions with small false-positive specks that removal should fix."""
    ref, pred = tmp_path / "labelsTr", tmp_path / "validation"
    for i in range(4):
        r = np.zeros((6, 30, 30), np.uint8)
        if i:
            r[2:4, 8:16, 8:18] = 1
        p = r.copy()
        p[2:4, 8:16, 17] = 0                 # a little under-segmentation
        p[1, 25, 2 + i] = 1                  # a 1-voxel false positive (0.00125 mL)
        _write(r, ref / f"case{i}.nii.gz")
        _write(p, pred / f"case{i}.nii.gz")
    return ref, pred


def test_postprocess_folder_cli(cv_folders, tmp_path, capsys):
    from nnunet_iph.cli import main

    _, pred = cv_folders
    out = tmp_path / "clean"
    assert main(["postprocess", str(pred), str(out), "--min-volume-ml", "0.01", "--num-workers", "1", "-q"]) == 0
    for i in range(4):
        before = sitk.ReadImage(str(pred / f"case{i}.nii.gz"))
        after = sitk.ReadImage(str(out / f"case{i}.nii.gz"))
        assert after.GetOrigin() == before.GetOrigin() and after.GetSpacing() == before.GetSpacing()
        a = sitk.GetArrayFromImage(after)
        assert a[1, 25].sum() == 0 and a.sum() == sitk.GetArrayFromImage(before).sum() - 1
    record = json.loads((out / "postprocessing.json").read_text(encoding="utf-8"))
    assert record["config"]["min_volume_ml"] == 0.01
    assert main(["postprocess", str(pred), str(tmp_path / "x"), "-q"]) == 2  # no step given
    assert "no post-processing step" in capsys.readouterr().err
    assert main(["postprocess", str(pred), str(pred), "--keep-largest", "1", "-q"]) == 2


def test_choose_postprocessing(cv_folders, tmp_path):
    from nnunet_iph.cli import main
    from nnunet_iph.postprocessing.choose import choose_postprocessing

    ref, pred = cv_folders
    result = choose_postprocessing(ref, pred, output_dir=tmp_path / "choice", progress=False)
    assert result.chosen.min_volume_ml or result.chosen.keep_largest
    assert result.best > result.baseline
    data = json.loads((tmp_path / "choice" / "postprocessing.json").read_text(encoding="utf-8"))
    assert data["metric"] == "dice" and data["chosen_mean"] == pytest.approx(result.best)
    assert len(data["candidates"]) == 10 and data["steps"]
    cases = pd.read_csv(tmp_path / "choice" / "postprocessing_cases.csv")
    assert {"dice_before", "dice_after", "hd95_mm_before", "hd95_mm_after"} <= set(cases.columns)
    assert (cases["dice_after"] >= cases["dice_before"]).all()
    assert "Before / after" in (tmp_path / "choice" / "postprocessing.md").read_text(encoding="utf-8")
    # the negative case (empty reference) goes from a false positive to a correct negative
    assert cases.set_index("case").loc["case0", "dice_after"] == 1.0

    # nothing helps -> no post-processing
    none = choose_postprocessing(ref, pred, grid=[{"opening_radius": 3, "radius_unit": "voxel"}],
                                 metric="dice", progress=False)
    assert none.chosen.is_identity and none.best == none.baseline

    # smaller-is-better metric, and the CLI applying its choice
    assert main(["choose-postprocessing", str(ref), str(pred), "-o", str(tmp_path / "c2"), "--metric", "hd95_mm",
                 "--apply-to", str(tmp_path / "applied"), "--num-workers", "1", "-q"]) == 0
    chosen = json.loads((tmp_path / "c2" / "postprocessing.json").read_text(encoding="utf-8"))
    assert chosen["direction"] == "lower" and chosen["chosen_mean"] <= chosen["baseline_mean"]
    assert (tmp_path / "applied" / "case1.nii.gz").is_file()
    with pytest.raises(ValueError, match="metric"):
        choose_postprocessing(ref, pred, metric="accuracy", progress=False)


def test_choose_rvd_does_not_reward_under_segmentation(tmp_path):
    """rvd is best at 0: a candidate that deletes a lesion (rvd < 0) must not win over an exact prediction."""
    from nnunet_iph.postprocessing.choose import choose_postprocessing

    ref, pred = tmp_path / "labelsTr", tmp_path / "validation"
    for i in range(2):
        r = np.zeros((6, 30, 30), np.uint8)
        r[2:4, 5:15, 5:15] = 1          # 400 voxels
        r[2:4, 20:25, 20:25] = 1        # 100 voxels: keep_largest 1 deletes it
        _write(r, ref / f"case{i}.nii.gz")
        _write(r, pred / f"case{i}.nii.gz")
    result = choose_postprocessing(ref, pred, metric="rvd", grid=[{"keep_largest": 1}], progress=False)
    assert result.chosen.is_identity and result.baseline == 0.0 and result.best == 0.0
    assert result.candidates[0]["mean"] == pytest.approx(100 / 500)  # mean |rvd| of keeping the largest
    assert result.to_dict()["objective"] == "mean |rvd|"


def _cut(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_postprocess_refuses_a_damaged_input_and_writes_nothing(cv_folders, tmp_path, capsys, damage):
    from nnunet_iph.cli import main

    _, pred = cv_folders
    _cut(pred / "case2.nii.gz", 0.5 if damage == "truncated" else 0.0)
    out = tmp_path / "clean"
    assert main(["postprocess", str(pred), str(out), "--min-volume-ml", "0.01", "--num-workers", "1", "-q"]) == 2
    err = capsys.readouterr().err
    assert "case2.nii.gz" in err and ("truncated" in err or "empty file" in err) and "Traceback" not in err
    assert not out.exists()  # not even the three good images
    out.mkdir()
    (out / "old.txt").write_text("kept")
    assert main(["postprocess", str(pred), str(out), "--min-volume-ml", "0.01", "--num-workers", "2", "-q"]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]


def test_postprocess_refuses_probability_maps(tmp_path, capsys):
    from nnunet_iph.cli import main

    img = sitk.GetImageFromArray(np.full((4, 8, 8), 0.25, np.float32))
    (tmp_path / "in").mkdir()
    sitk.WriteImage(img, str(tmp_path / "in" / "p.nii.gz"))
    assert main(["postprocess", str(tmp_path / "in"), str(tmp_path / "out"), "--keep-largest", "1", "-q"]) == 2
    assert "p.nii.gz: not a label map" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_output_folders_that_cannot_be_used(cv_folders, tmp_path, capsys, monkeypatch):
    from nnunet_iph.analysis import output_paths
    from nnunet_iph.cli import main

    ref, pred = cv_folders
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    for out in (a_file, a_file / "below"):
        assert main(["postprocess", str(pred), str(out), "--keep-largest", "1", "-q"]) == 2
        assert f"output folder {out}" in capsys.readouterr().err
        assert main(["choose-postprocessing", str(ref), str(pred), "-o", str(out), "-q"]) == 2
        assert f"output folder {out}" in capsys.readouterr().err
    assert main(["choose-postprocessing", str(ref), str(pred), "-o", str(tmp_path / "c"), "--apply-to",
                 str(a_file), "-q"]) == 2
    assert "--apply-to folder" in capsys.readouterr().err and not (tmp_path / "c").exists()

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(output_paths.tempfile, "mkstemp", refuse)  # a read-only folder (also for root)
    assert main(["postprocess", str(pred), str(tmp_path / "ro"), "--keep-largest", "1", "-q"]) == 2
    assert "cannot write to" in capsys.readouterr().err and not (tmp_path / "ro").exists()


def test_bad_configs_are_one_line_errors(cv_folders, tmp_path, capsys):
    from nnunet_iph.cli import main

    ref, pred = cv_folders
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["postprocess", str(pred), str(tmp_path / "o"), "--config", str(bad), "-q"]) == 2
    assert "bad.json: not readable JSON" in capsys.readouterr().err
    assert main(["choose-postprocessing", str(ref), str(pred), "-o", str(tmp_path / "c"), "--grid",
                 '[{"min_volume_ml": "small"}]', "-q"]) == 2
    assert "wrong type of value" in capsys.readouterr().err


def test_choose_refuses_a_truncated_prediction(cv_folders, tmp_path, capsys):
    from nnunet_iph.cli import main

    ref, pred = cv_folders
    _cut(pred / "case1.nii.gz", 0.5)
    out = tmp_path / "choice"
    assert main(["choose-postprocessing", str(ref), str(pred), "-o", str(out), "-q"]) == 2
    assert f"prediction {pred / 'case1.nii.gz'}: truncated" in capsys.readouterr().err
    assert not out.exists()
