"""Brain-restricted copies of validation predictions: what is removed, the nnU-Net summary, staleness."""

from __future__ import annotations

import json
import os

import numpy as np
import SimpleITK as sitk

from nnunet_iph.benchmarking.restriction import restrict_predictions, restricted_current


def _write(arr: np.ndarray, path) -> None:
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.SetSpacing((0.5, 0.5, 5.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))


def test_restriction_removes_outside_voxels_scores_and_detects_stale_sources(tmp_path):
    src, masks, refs, out = (tmp_path / n for n in ("val", "masks", "refs", "out"))
    pred = np.zeros((4, 10, 10), np.uint8)
    pred[1:3, 2:5, 2:5] = 1  # 18 voxels inside the brain, all true positives
    pred[1:3, 8:10, 8:10] = 1  # 8 voxels outside: false positives
    brain = np.zeros_like(pred)
    brain[:, 1:7, 1:7] = 1
    _write(pred, src / "a.nii.gz")
    _write(brain, masks / "a.nii.gz")
    ref = np.zeros_like(pred)
    ref[1:3, 2:5, 2:5] = 1
    _write(ref, refs / "a.nii.gz")

    info = restrict_predictions(src, out, masks, refs, ".nii.gz")
    assert info == {"cases": 1, "removed_voxels": 8, "cases_changed": 1}
    restricted = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "a.nii.gz")))
    assert restricted.sum() == 18 and (restricted == ref).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["foreground_mean"]["Dice"] == 1.0  # before restriction: 2*18 / (26 + 18) = 0.818
    assert (sitk.GetArrayFromImage(sitk.ReadImage(str(src / "a.nii.gz"))) == pred).all()  # source untouched
    assert restricted_current(src, out, masks, ".nii.gz")
    # the brain masks are recomputed: stale too
    st = (masks / "a.nii.gz").stat()
    os.utime(masks / "a.nii.gz", (st.st_atime, st.st_mtime + 5))
    assert not restricted_current(src, out, masks, ".nii.gz")
    restrict_predictions(src, out, masks, refs, ".nii.gz")
    assert restricted_current(src, out, masks, ".nii.gz")

    # the model is re-trained and its predictions rewritten: the copy is stale, never scored as current
    _write(ref, src / "a.nii.gz")
    st = (src / "a.nii.gz").stat()
    os.utime(src / "a.nii.gz", (st.st_atime, st.st_mtime + 5))
    assert not restricted_current(src, out, masks, ".nii.gz")
