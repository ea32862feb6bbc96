"""Restriction of predictions to the intracranial mask: the operation, its place in the order of
steps, the mask sources (a folder of masks, CTs), the choice on cross-validation results, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from nnunet_iph.cli import main
from nnunet_iph.postprocessing import PostprocessingConfig, apply_postprocessing
from nnunet_iph.postprocessing.brain import BrainSource
from nnunet_iph.postprocessing.folder import load_config

SHAPE = (6, 30, 30)
SPACING = (0.5, 0.5, 5.0)  # x, y, z as SimpleITK spacing


def _brain() -> np.ndarray:
    b = np.zeros(SHAPE, np.uint8)
    b[:, 4:24, 4:24] = 1
    return b


def _inside_blob(a):
    a[2:4, 8:16, 8:18] = 1  # 160 voxels, inside the brain


def _outside_blob(a, i=0):
    a[1:3, 26:29, 25 + i:28 + i] = 1  # 18 voxels, beyond the brain's edge (rows 24+)


def _write(arr, path, origin=(3.0, -2.0, 1.0), spacing=SPACING):
    img = sitk.GetImageFromArray(np.asarray(arr))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))


def _read(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_restriction_removes_exactly_the_outside_voxels_and_comes_first():
    brain = _brain()
    pred = np.zeros(SHAPE, np.uint8)
    _inside_blob(pred)
    pred[1:5, 20:28, 20:28] = 2  # label 2 straddles the edge: 4 x 8 x 8, 4 x 4 x 4 of it inside
    out = apply_postprocessing(pred, SPACING[::-1], PostprocessingConfig(restrict_to_brain=True), brain=brain)
    assert np.array_equal(out, np.where(brain == 1, pred, 0))
    assert (out == 1).sum() == 160 and (out == 2).sum() == 4 * 4 * 4
    # restriction first: "keep largest" then keeps the intracranial blob, not the bigger scalp blob
    big_outside = np.zeros(SHAPE, np.uint8)
    _inside_blob(big_outside)
    big_outside[:, 25:30, 0:30] = 1  # 900 voxels, all outside
    cfg = PostprocessingConfig(restrict_to_brain=True, keep_largest=1)
    assert (apply_postprocessing(big_outside, SPACING[::-1], cfg, brain=brain) == 1).sum() == 160
    # a step that adds voxels (closing) adds none outside the brain: it closes the crack inside, not the notch
    notched = brain.copy()
    notched[1:4, 15, 10:14] = 0
    gap = np.zeros(SHAPE, np.uint8)
    gap[1:4, 12:19, 10:14] = 1
    gap[1:4, 13, 10:14] = 0
    cfg = PostprocessingConfig(restrict_to_brain=True, closing_radius=1, radius_unit="voxel")
    closed = apply_postprocessing(gap, SPACING[::-1], cfg, brain=notched)
    assert closed[2, 13, 11:13].all() and not closed[:, 15, 10:14].any()
    assert apply_postprocessing(gap, SPACING[::-1], PostprocessingConfig(closing_radius=1, radius_unit="voxel"))[
        2, 15, 11:13].all()  # the notch would be filled without the mask
    with pytest.raises(ValueError, match="no brain mask"):
        apply_postprocessing(pred, SPACING[::-1], PostprocessingConfig(restrict_to_brain=True))
    with pytest.raises(ValueError, match="shape"):
        apply_postprocessing(pred, SPACING[::-1], PostprocessingConfig(restrict_to_brain=True), brain=brain[1:])


def test_config_round_trip_merge_and_description(tmp_path):
    cfg = PostprocessingConfig(restrict_to_brain=True, min_volume_ml=0.1)
    assert PostprocessingConfig.from_dict(cfg.to_dict()) == cfg and not cfg.is_identity
    assert cfg.describe() == "restrict to brain, remove < 0.1 mL"
    assert not PostprocessingConfig(restrict_to_brain=True).has_mask_steps
    assert PostprocessingConfig(min_volume_ml=0.1).merged(PostprocessingConfig(restrict_to_brain=True)) == cfg
    assert cfg.merged(PostprocessingConfig(restrict_to_brain=True)) is None  # the same step twice
    with pytest.raises(ValueError, match="restrict_to_brain must be true or false"):
        PostprocessingConfig.from_dict({"restrict_to_brain": "yes"})
    (tmp_path / "c.json").write_text(json.dumps({"chosen": cfg.to_dict()}))
    assert load_config(tmp_path / "c.json") == cfg


@pytest.fixture
def folders(tmp_path):
    """Predictions a, b with a false positive outside the brain, c with an all-ones (passed-through) mask."""
    pred, masks, ref = tmp_path / "pred", tmp_path / "brain", tmp_path / "ref"
    for i, case in enumerate("abc"):
        r = np.zeros(SHAPE, np.uint8)
        _inside_blob(r)
        p = r.copy()
        _outside_blob(p, i)
        _write(r, ref / f"{case}.nii.gz")
        _write(p, pred / f"{case}.nii.gz")
        _write(_brain() if case != "c" else np.ones(SHAPE, np.uint8), masks / f"{case}.nii.gz")
    return ref, pred, masks


def test_postprocess_cli_restricts_and_reports_pass_through(folders, tmp_path, capsys):
    ref, pred, masks = folders
    out = tmp_path / "out"
    assert main(["postprocess", str(pred), str(out), "--restrict-to-brain", "--brain-masks", str(masks),
                 "--num-workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "36 voxel(s) removed in 2 of 3 image(s)" in printed and "not restricted): c" in printed
    for case in "ab":
        assert np.array_equal(_read(out / f"{case}.nii.gz"), _read(ref / f"{case}.nii.gz"))
    assert np.array_equal(_read(out / "c.nii.gz"), _read(pred / "c.nii.gz"))  # all-ones mask: unchanged
    record = json.loads((out / "postprocessing.json").read_text(encoding="utf-8"))
    assert record["config"]["restrict_to_brain"] is True and str(masks) in record["brain_source"]
    rows = {r["case"]: r for r in record["cases"]}
    assert rows["a.nii.gz"]["removed_outside_brain"] == 18 and rows["a.nii.gz"]["changed_voxels"] == 18
    assert rows["c.nii.gz"]["brain_passed_through"] and "passed through" in rows["c.nii.gz"]["brain_note"]

    # the config records the restriction; re-applying it needs the masks again
    again = tmp_path / "again"
    assert main(["postprocess", str(pred), str(again), "--config", str(out / "postprocessing.json"), "-q"]) == 2
    assert "restricts to the brain: give --brain-masks DIR or --images DIR" in capsys.readouterr().err
    assert not again.exists()
    assert main(["postprocess", str(pred), str(again), "--config", str(out / "postprocessing.json"),
                 "--brain-masks", str(masks), "-q"]) == 0
    for case in "abc":
        assert np.array_equal(_read(again / f"{case}.nii.gz"), _read(out / f"{case}.nii.gz"))


def test_bad_brain_masks_are_refused_naming_the_files(folders, tmp_path, capsys):
    ref, pred, masks = folders
    out = tmp_path / "out"
    args = ["postprocess", str(pred), str(out), "--restrict-to-brain", "--num-workers", "1", "-q"]
    _write(_brain(), masks / "b.nii.gz", origin=(3.0, -2.0, 6.0))  # another grid: shifted by one slice
    assert main([*args, "--brain-masks", str(masks)]) == 2
    err = capsys.readouterr().err
    assert f"brain mask {masks / 'b.nii.gz'}: not on the grid of the prediction {pred / 'b.nii.gz'}" in err
    assert "origin" in err and not out.exists()
    (masks / "b.nii.gz").unlink()
    assert main([*args, "--brain-masks", str(masks)]) == 2
    assert "case b: no brain mask b.nii.gz" in capsys.readouterr().err and not out.exists()
    _write(np.full(SHAPE, -1000, np.int16), masks / "b.nii.gz")  # a CT where the mask belongs
    assert main([*args, "--brain-masks", str(masks)]) == 2
    assert "b.nii.gz: not a label image" in capsys.readouterr().err
    assert main([*args, "--brain-masks", str(masks), "--images", str(masks)]) == 2
    assert "not both" in capsys.readouterr().err
    assert main([*args, "--brain-masks", str(tmp_path / "nowhere")]) == 2
    assert "brain-mask folder not found" in capsys.readouterr().err
    assert main(["postprocess", str(pred), str(out), "--keep-largest", "1", "--brain-masks", str(masks), "-q"]) == 2
    assert "add --restrict-to-brain" in capsys.readouterr().err


def _head(shape=(20, 170, 150), spacing=(1.2, 1.2, 8.0)):
    """A CT in HU (z, y, x): air, 5 mm scalp, 6 mm skull around an ellipsoidal cavity; the cavity."""
    z, y, x = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing[::-1])], indexing="ij")

    def inside(pad):
        return (x / (70 + pad)) ** 2 + (y / (85 + pad)) ** 2 + (z / (60 + pad)) ** 2 <= 1

    hu = np.full(shape, -1000, np.int16)
    hu[inside(11)] = 40
    hu[inside(6)] = 1000
    hu[inside(0)] = 32
    return hu, inside(0)


def test_masks_computed_from_the_ct_images(tmp_path, capsys):
    hu, cavity = _head()
    images, pred = tmp_path / "imagesTs", tmp_path / "pred"
    spacing = (1.2, 1.2, 8.0)
    _write(hu, images / "head_0000.nii.gz", spacing=spacing)
    _write(np.full(hu.shape, 100, np.int16), images / "flat.nii.gz", spacing=spacing)  # no HU: passed through
    p = np.zeros(hu.shape, np.uint8)
    p[8:12, 70:100, 60:90] = 1  # in the brain
    p[8:12, 0:6, 70:80] = 1  # in the air in front of the head
    _write(p, pred / "head.nii.gz", spacing=spacing)
    _write(p, pred / "flat.nii.gz", spacing=spacing)
    out = tmp_path / "out"
    assert main(["postprocess", str(pred), str(out), "--restrict-to-brain", "--images", str(images),
                 "--num-workers", "1"]) == 0
    assert "not restricted): flat" in capsys.readouterr().out
    from nnunet_iph.brain.extraction import intracranial_mask
    from nnunet_iph.imageio import read_image

    mask = sitk.GetArrayFromImage(intracranial_mask(read_image(images / "head_0000.nii.gz", "CT")).mask)
    assert (mask[8:12, 70:100, 60:90] == 1).all() and not mask[8:12, 0:6].any()
    assert np.array_equal(_read(out / "head.nii.gz"), p * mask)
    assert _read(out / "head.nii.gz").sum() == 4 * 30 * 30
    assert np.array_equal(_read(out / "flat.nii.gz"), p)
    (images / "head_0000.nii.gz").unlink()
    assert main(["postprocess", str(pred), str(tmp_path / "o2"), "--restrict-to-brain", "--images", str(images),
                 "-q"]) == 2
    assert "case head: no CT image" in capsys.readouterr().err


def test_choose_takes_the_restriction_when_it_helps(folders, tmp_path):
    from nnunet_iph.postprocessing.choose import choose_postprocessing

    ref, pred, masks = folders
    grid = [{"min_volume_ml": 0.5}]  # removes everything here: never chosen
    result = choose_postprocessing(ref, pred, output_dir=tmp_path / "choice", grid=grid, progress=False,
                                   brain=BrainSource(masks=masks))
    assert result.chosen == PostprocessingConfig(restrict_to_brain=True)
    assert [c["description"] for c in result.candidates] == ["remove < 0.5 mL", "restrict to brain",
                                                             "restrict to brain, remove < 0.5 mL"]
    dice_b = 2 * 160 / (2 * 160 + 18)
    assert result.baseline == pytest.approx(dice_b) and result.best == pytest.approx((2 + dice_b) / 3)
    assert result.brain["removed_voxels"] == 36 and result.brain["cases_changed"] == ["a", "b"]
    assert result.brain["passed_through"] == ["c"]
    data = json.loads((tmp_path / "choice" / "postprocessing.json").read_text(encoding="utf-8"))
    assert data["chosen"]["restrict_to_brain"] is True and data["brain_restriction"]["removed_voxels"] == 36
    md = (tmp_path / "choice" / "postprocessing.md").read_text(encoding="utf-8")
    assert "removes 36 predicted voxel(s) in 2 of 3 case(s) (a, b); 1 passed through" in md
    cases = pd.read_csv(tmp_path / "choice" / "postprocessing_cases.csv").set_index("case")
    assert cases.loc["a", "removed_outside_brain"] == 18 and cases.loc["c", "brain_passed_through"]
    # without brain masks the grid is as given, and a restricting grid needs them
    assert len(choose_postprocessing(ref, pred, grid=grid, progress=False).candidates) == 1
    with pytest.raises(ValueError, match="restricts to the brain"):
        choose_postprocessing(ref, pred, grid=[{"restrict_to_brain": True}], progress=False)


def test_choose_does_not_take_the_restriction_when_it_hurts(tmp_path, capsys):
    ref, pred, masks = tmp_path / "ref", tmp_path / "pred", tmp_path / "brain"
    for case in "ab":
        r = np.zeros(SHAPE, np.uint8)
        _inside_blob(r)
        _outside_blob(r)  # real blood beyond the (too small) mask, correctly predicted
        _write(r, ref / f"{case}.nii.gz")
        _write(r, pred / f"{case}.nii.gz")
        _write(_brain(), masks / f"{case}.nii.gz")
    out = tmp_path / "choice"
    assert main(["choose-postprocessing", str(ref), str(pred), "-o", str(out), "--brain-masks", str(masks),
                 "--apply-to", str(tmp_path / "applied"), "-q"]) == 0
    data = json.loads((out / "postprocessing.json").read_text(encoding="utf-8"))
    assert data["chosen_description"] == "none" and data["brain_restriction"]["removed_voxels"] == 36
    restrict = next(c for c in data["candidates"] if c["description"] == "restrict to brain")
    assert restrict["delta"] == pytest.approx(2 * 160 / (2 * 160 + 18) - 1)
    assert len(data["candidates"]) == 21  # the built-in 10, the restriction, and the 10 combined with it
    assert not (tmp_path / "applied").exists()
    (masks / "b.nii.gz").unlink()
    assert main(["choose-postprocessing", str(ref), str(pred), "-o", str(tmp_path / "c2"), "--brain-masks",
                 str(masks), "-q"]) == 2
    assert "case b: no brain mask" in capsys.readouterr().err and not (tmp_path / "c2").exists()


def test_restrict_folder_in_place_for_predict(folders, tmp_path):
    """What ``predict --restrict-to-brain`` does to its output folder: all cases checked before any is rewritten."""
    from nnunet_iph.postprocessing.brain import restrict_folder_in_place

    ref, pred, masks = folders
    before = {case: (pred / f"{case}.nii.gz").read_bytes() for case in "abc"}
    _write(_brain()[:, :, :20], masks / "c.nii.gz")  # the last case's mask is of another size
    with pytest.raises(ValueError, match=f"brain mask {masks / 'c.nii.gz'}: not on the grid.*size"):
        restrict_folder_in_place(pred, ["a", "b", "c"], ".nii.gz", masks)
    assert {case: (pred / f"{case}.nii.gz").read_bytes() for case in "abc"} == before  # none rewritten
    _write(np.ones(SHAPE, np.uint8), masks / "c.nii.gz")
    summary = restrict_folder_in_place(pred, ["a", "b", "c"], ".nii.gz", masks)
    assert {c: s["removed_outside_brain"] for c, s in summary.items()} == {"a": 18, "b": 18, "c": 0}
    assert summary["c"]["brain_passed_through"] and (pred / "c.nii.gz").read_bytes() == before["c"]
    for case in "ab":
        assert np.array_equal(_read(pred / f"{case}.nii.gz"), _read(ref / f"{case}.nii.gz"))


def test_predict_refuses_the_restriction_on_resampled_dicom_before_any_model_runs(tmp_path):
    import math

    from nnunet_iph.ensembling.ensemble import ModelRef
    from nnunet_iph.inference.predict import PredictSettings, predict
    from tests.inference.dicom_synth import DZ, SY, positions, series

    model = tmp_path / "Dataset999_Fake" / "nnUNetTrainer__nnUNetPlans__2d"  # no checkpoint: never loaded
    model.mkdir(parents=True)
    (model / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "file_ending": ".nii.gz",
                                                    "labels": {"background": 0, "hemorrhage": 1}}))
    series(tmp_path / "in" / "tilted", 12, pos=positions(tilt_deg=math.degrees(math.atan(SY / DZ))))
    settings = PredictSettings(restrict_to_brain=True, dicom_irregular="resample", qc=False)
    with pytest.raises(ValueError, match="--restrict-to-brain with resampled DICOM cases"):
        predict(tmp_path / "in", tmp_path / "out", "single", [ModelRef(model)], settings)
    assert not (tmp_path / "out").exists()
