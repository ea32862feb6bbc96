"""A model trained on skull-stripped CTs with channel copies (``convert --brain-mask --ct-channels N``):
``nnunet-iph prepare-inputs`` writes exactly the training files, ``nnunet-iph predict`` hands nnU-Net's
network exactly the training preprocessed array (bit for bit), and what cannot be repeated is refused."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_iph.brain.settings import BrainMaskSettings
from nnunet_iph.inference.model_inputs import InputSteps, steps_of_dataset
from tests.conftest import run_cli
from tests.network_recorder import initialize_without_checkpoint, record_network_inputs

STEPS = InputSteps(BrainMaskSettings(), None, 3)
CASES = ("sub0001", "sub0002", "sub0003")


@pytest.fixture(scope="module")
def stripped_dataset(phantom_cohort, nnunet_dirs, tmp_path_factory):
    """Dataset572: three phantom subjects converted with brain masks and 3 CT channels; their raw CTs
    (plain names) in a folder of their own."""
    from nnunet_iph.dataset_conversion import convert_multisite

    src = phantom_cohort.parent
    with open(phantom_cohort, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["subject_id"] in CASES]
    root = tmp_path_factory.mktemp("stripped")
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({**r, "image": str(src / r["image"]), "mask": str(src / r["mask"])} for r in rows)
    raw = convert_multisite(manifest, 572, "Stripped", nnunet_dirs["nnUNet_raw"], progress=False, input_steps=STEPS)
    inputs = root / "ct"
    inputs.mkdir()
    for r in rows:
        shutil.copyfile(src / r["image"], inputs / f"{r['subject_id']}.nii.gz")
    return raw, inputs


def _model_folder(raw: Path, where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(raw / "dataset.json", where / "dataset.json")
    return where


def test_prepare_inputs_writes_the_training_files(stripped_dataset, tmp_path):
    raw, inputs = stripped_dataset
    model = _model_folder(raw, tmp_path / "model")
    proc = run_cli("nnunet-iph", "prepare-inputs", str(inputs), str(tmp_path / "out"), "-m", str(model))
    assert "3 case(s)" in proc.stdout and "nnUNetv2_predict -i" in proc.stdout
    assert "sub0003: " not in proc.stderr  # every phantom head is masked (nothing passed through)
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == [f"{c}_{k:04d}.nii.gz" for c in CASES for k in range(3)]
    for name in written:
        a, b = sitk.ReadImage(str(tmp_path / "out" / name)), sitk.ReadImage(str(raw / "imagesTr" / name))
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b))
        assert a.GetPixelID() == b.GetPixelID() and a.GetSpacing() == b.GetSpacing()
        assert a.GetOrigin() == b.GetOrigin() and a.GetDirection() == b.GetDirection()

    # a re-run into the same folder is fine; a folder holding another case is refused (it would be segmented)
    run_cli("nnunet-iph", "prepare-inputs", str(inputs), str(tmp_path / "out"), "-m", str(model))
    (tmp_path / "out" / "stale_0000.nii.gz").write_bytes(b"")
    proc = run_cli("nnunet-iph", "prepare-inputs", str(inputs), str(tmp_path / "out"), "-m", str(model), check=False)
    assert proc.returncode == 2 and "holds 1 image file(s) of other cases (stale_0000.nii.gz)" in proc.stderr


def test_prepare_inputs_bad_model_and_inputs(stripped_dataset, tmp_path):
    raw, inputs = stripped_dataset
    proc = run_cli("nnunet-iph", "prepare-inputs", str(inputs), str(tmp_path / "o"), "-m", str(tmp_path), check=False)
    assert proc.returncode == 2 and "dataset.json: not found; -m names a trained model's folder" in proc.stderr
    model = _model_folder(raw, tmp_path / "model")
    ds = json.loads((model / "dataset.json").read_text())
    ds["nnunet_iph"]["skull_strip_v2"] = {}
    (model / "dataset.json").write_text(json.dumps(ds))
    proc = run_cli("nnunet-iph", "prepare-inputs", str(inputs), str(tmp_path / "o"), "-m", str(model), check=False)
    assert proc.returncode == 2 and "knows 'brain_mask' and 'ct_channels' only" in proc.stderr
    # channel files of an already prepared case: one CT per case, the copies are made here
    model = _model_folder(raw, tmp_path / "model2")
    proc = run_cli("nnunet-iph", "prepare-inputs", str(raw / "imagesTr"), str(tmp_path / "o"), "-m", str(model),
                   check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "has channels [0, 1, 2]" in proc.stderr
    bad = tmp_path / "ct_bad"
    bad.mkdir()
    (bad / "case.nii.gz").write_bytes(b"")
    proc = run_cli("nnunet-iph", "prepare-inputs", str(bad), str(tmp_path / "o"), "-m", str(model), check=False)
    assert proc.returncode == 2 and str(bad / "case.nii.gz") in proc.stderr and not (tmp_path / "o").exists()


def test_steps_record_round_trip_and_refusals():
    ds = {"channel_names": {"0": "CT", "1": "CT", "2": "CT"}, "nnunet_iph": STEPS.record()}
    assert steps_of_dataset(ds, "x") == STEPS
    fill = InputSteps(BrainMaskSettings(min_volume_ml=300.0), -1024.0)
    assert steps_of_dataset({"channel_names": {"0": "CT"}, "nnunet_iph": fill.record()}, "x") == fill
    assert steps_of_dataset({"channel_names": {"0": "CT"}}, "x") == InputSteps()
    with pytest.raises(ValueError, match="records ct_channels 3 but channel_names"):
        steps_of_dataset({**ds, "channel_names": {"0": "CT", "1": "CT", "2": "MR"}}, "x")
    rec = STEPS.record()
    del rec["brain_mask"]["grow_mm"]
    with pytest.raises(ValueError, match="could not be repeated exactly"):
        steps_of_dataset({**ds, "nnunet_iph": rec}, "x")


@pytest.mark.slow
def test_predict_hands_the_network_the_training_array(stripped_dataset, nnunet_dirs, tmp_path, monkeypatch):
    """nnU-Net preprocesses the converted dataset (training); ``nnunet-iph predict`` on the raw CTs, with
    nnU-Net's predictor in-process and its network replaced by a recorder: the arrays are identical."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    from nnunet_iph.ensembling.ensemble import ModelRef
    from nnunet_iph.inference.predict import PredictSettings, predict

    raw, inputs = stripped_dataset
    run_cli("nnUNetv2_plan_and_preprocess", "-d", "572", "-c", "2d", "-np", "1")
    pre = nnunet_dirs["nnUNet_preprocessed"] / raw.name
    model = nnunet_dirs["nnUNet_results"] / raw.name / "nnUNetTrainer__nnUNetPlans__2d"
    (model / "fold_0").mkdir(parents=True)
    (model / "fold_0" / "checkpoint_final.pth").write_bytes(b"")  # never loaded: see fake_init
    shutil.copyfile(pre / "nnUNetPlans.json", model / "plans.json")
    shutil.copyfile(pre / "dataset.json", model / "dataset.json")

    seen = record_network_inputs(monkeypatch)
    res = predict(inputs, tmp_path / "out", "single", [ModelRef(model)], PredictSettings(tta=False))
    assert res.cases == list(CASES) and len(seen) == len(CASES) and res.warnings == []
    pj = json.loads((tmp_path / "out" / "pipeline.json").read_text())
    assert pj["model_inputs"]["steps"] == STEPS.record()

    folder = pre / "nnUNetPlans_2d"
    training = infer_dataset_class(str(folder))(str(folder))
    for case, got in zip(CASES, seen):
        expected = np.asarray(training.load_case(case)[0][:])
        assert got.shape == expected.shape and got.dtype == expected.dtype
        assert np.array_equal(got, expected), case  # bit for bit
    # the check can fail: plain nnU-Net preprocessing of the raw CT gives another array
    p = nnUNetPredictor(device=torch.device("cpu"))
    initialize_without_checkpoint(p, model)
    plain, _, _ = p.configuration_manager.preprocessor_class(verbose=False).run_case(
        [str(inputs / f"{CASES[0]}.nii.gz")] * 3, None, p.plans_manager, p.configuration_manager, p.dataset_json)
    assert not np.array_equal(plain, seen[0])
