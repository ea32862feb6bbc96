"""Coarse (2D DenseNet, all folds) -> fine (3D) -> inference with -prev_stage_predictions, real CLIs."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from plane_workflow import (CASCADE_PLANS, COARSE_TRAINER, FINE_PROB_TRAINER, FINE_TRAINER, MULTI_ID, run_cli)

pytestmark = pytest.mark.slow
D = str(MULTI_ID)


def _cases(folder):
    return sorted(p.name[:-len("_0000.nii.gz")] for p in folder.glob("*_0000.nii.gz"))


def test_fine_stage_trained_on_the_coarse_trainers_predictions(cascade_models, multi_dataset):
    nxt = cascade_models["coarse"] / "predicted_next_stage" / "3d_fine"
    train_cases = _cases(multi_dataset.raw / "imagesTr")
    assert sorted(p.name.split(".")[0] for p in nxt.iterdir()) == train_cases  # all folds' validation cases
    fold = cascade_models["fine"] / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file()
    assert json.loads((fold / "validation" / "summary.json").read_text(encoding="utf-8"))["metric_per_case"]
    log = "".join(p.read_text(encoding="utf-8") for p in fold.glob("training_log_*.txt"))
    assert f"coarse stage (argmax) from {COARSE_TRAINER}" in log


def test_prev_stage_predictions_inference_matches_nnunet_iph_predict(cascade_models, multi_dataset, tmp_path):
    images = multi_dataset.raw / "imagesTs"
    common = ["-device", "cpu", "-npp", "0", "-nps", "0", "--disable_tta", "-d", D, "-p", CASCADE_PLANS]
    run_cli("nnUNetv2_predict", "-i", str(images), "-o", str(tmp_path / "coarse"), "-c", "2d_coarse",
            "-tr", COARSE_TRAINER, "-f", "0", "1", *common)
    run_cli("nnUNetv2_predict", "-i", str(images), "-o", str(tmp_path / "fine"), "-c", "3d_fine", "-tr", FINE_TRAINER,
            "-f", "0", "-prev_stage_predictions", str(tmp_path / "coarse"), *common)
    out = tmp_path / "iph"
    # nnUNetv2_predict runs torch on cpu_count() threads on CPU, nnunet-iph on the caller's: same threads,
    # same float sums (otherwise rare argmax flips)
    proc = run_cli("nnunet-iph", "predict", "-i", str(images), "-o", str(out), "--pipeline", "cascade", "-d", D,
                   "-tr", FINE_TRAINER, "--device", "cpu", "--disable-tta", "--keep-members",
                   env={**os.environ, "OMP_NUM_THREADS": str(os.cpu_count())})
    assert "volumes" in proc.stdout
    for case in _cases(images):
        ours = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}.nii.gz")))
        theirs = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "fine" / f"{case}.nii.gz")))
        assert np.array_equal(ours, theirs), case
        coarse = sitk.ReadImage(str(out / "members" / f"coarse__{cascade_models['coarse'].name}" / f"{case}.nii.gz"))
        assert np.array_equal(sitk.GetArrayFromImage(coarse),
                              sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "coarse" / f"{case}.nii.gz"))))
    info = json.loads((out / "pipeline.json").read_text(encoding="utf-8"))
    assert info["coarse"].endswith(cascade_models["coarse"].name)
    assert set(info["timing"]["stages"]) == {"validate_inputs", "coarse", "fine"}


def test_missing_coarse_fold_stops_fine_training_with_a_clear_message(cascade_models, multi_dataset):
    partial = cascade_models["coarse"].parent / f"nnUNetTrainerCoarseOneFold__{CASCADE_PLANS}__2d_coarse"
    if not partial.is_dir():
        shutil.copytree(cascade_models["coarse"], partial)
        splits = json.loads((multi_dataset.preprocessed / "splits_final.json").read_text(encoding="utf-8"))
        shutil.rmtree(partial / "fold_1")
        for case in splits[1]["val"]:
            (partial / "predicted_next_stage" / "3d_fine" / f"{case}.b2nd").unlink()
    env = {"NNUNET_IPH_COARSE_TRAINER": "nnUNetTrainerCoarseOneFold"}
    proc = run_cli("nnUNetv2_train", D, "3d_fine", "1", "-tr", FINE_TRAINER, "-p", CASCADE_PLANS, "-device", "cpu",
                   check=False, env=env)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "coarse outputs missing" in text and "fold 1: not trained" in text
    assert "nnUNetv2_train" in text.split("fold 1: not trained")[1]


def test_missing_fine_preprocessing_is_reported(cascade_models, multi_dataset):
    from nnunet_iph.planning.cascade import check_coarse_outputs

    plans = json.loads((multi_dataset.preprocessed / f"{CASCADE_PLANS}.json").read_text(encoding="utf-8"))
    plans["configurations"]["3d_fine"]["data_identifier"] = "nnUNetPlans_not_preprocessed"
    with pytest.raises(FileNotFoundError, match="not preprocessed.*BEFORE the coarse"):
        check_coarse_outputs(MULTI_ID, plans, "3d_fine", "nnUNetTrainerCoarseOneFold", ["sub0001", "zzz_unknown"])


def test_probability_variant_needs_npz_then_trains_and_predicts(cascade_models, multi_dataset, tmp_path):
    from nnunet_iph.planning.cascade import PROBABILITY_LEVELS, check_coarse_outputs

    plans = json.loads((multi_dataset.preprocessed / f"{CASCADE_PLANS}.json").read_text(encoding="utf-8"))
    nonpz = cascade_models["coarse"].parent / f"nnUNetTrainerCoarseNoNpz__{CASCADE_PLANS}__2d_coarse"
    if not nonpz.is_dir():
        shutil.copytree(cascade_models["coarse"], nonpz, ignore=shutil.ignore_patterns("*.npz"))
    with pytest.raises(FileNotFoundError, match="--val --npz"):
        check_coarse_outputs(MULTI_ID, plans, "3d_fine", "nnUNetTrainerCoarseNoNpz",
                             _cases(multi_dataset.raw / "imagesTr"), kind="probabilities")

    multi_dataset.train("3d_fine", 0, FINE_PROB_TRAINER, CASCADE_PLANS)
    folder = cascade_models["coarse"] / "predicted_next_stage_probabilities" / "3d_fine"
    assert len(list(folder.glob("*.b2nd"))) == len(_cases(multi_dataset.raw / "imagesTr"))
    import blosc2

    values = np.unique(np.concatenate([blosc2.open(str(p))[:].ravel() for p in folder.glob("*.b2nd")]))
    assert values.min() >= 0 and values.max() <= PROBABILITY_LEVELS and len(values) > 2  # not just a binary mask

    out = tmp_path / "prob"
    run_cli("nnunet-iph", "predict", "-i", str(multi_dataset.raw / "imagesTs"), "-o", str(out), "--pipeline", "cascade",
            "-d", D, "-m", f"{FINE_PROB_TRAINER}__{CASCADE_PLANS}__3d_fine", "--device", "cpu", "--disable-tta",
            "--keep-members")
    coarse_out = out / "members" / f"coarse__{cascade_models['coarse'].name}"
    for case in _cases(multi_dataset.raw / "imagesTs"):
        assert (coarse_out / f"{case}.npz").is_file()  # coarse probabilities fed the fine stage
        assert (out / f"{case}.nii.gz").is_file()
