"""``nnunet-iph recipe physionet2d --run`` on the phantom, to the end: four tiny trainings, the test-set
predictions where recipe.json says, and a rerun that touches nothing (the resume contract)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow
SCHEDULE = "1ep_2it_noTTA"


def _outputs(results, models: list[str], predictions) -> dict:
    """mtime of every checkpoint and test prediction the run must have written."""
    files = [results / m / "fold_0" / name for m in models for name in ("checkpoint_final.pth",
                                                                         "validation/summary.json")]
    files += [p for m in models for p in sorted((predictions / m).glob("*.nii.gz"))]
    return {f: f.stat().st_mtime_ns for f in files}


def test_physionet2d_runs_to_the_end_and_resumes(phantom_dataset, tmp_path):
    out = tmp_path / "phys"
    args = ("nnunet-iph", "recipe", "physionet2d", "-d", "501", "-o", str(out), "--folds", "0",
            "--schedule", SCHEDULE, "--run", "--device", "cpu", "-np", "2")
    proc = run_cli(*args, timeout=1800)
    rec = json.loads((out / "recipe.json").read_text())
    models = rec["models"]
    assert models == [f"nnUNetTrainer{a}_{SCHEDULE}__nnUNetPlans_axial__2d"
                      for a in ("VGG16UNet", "UNetPlusPlus", "LinkNet", "ResUNet")]
    steps = len(models) * 2  # a training and a test-set prediction per model
    assert f"recipe physionet2d: {steps} step(s) done" in proc.stdout

    predictions = out / "predictions" / "axial"
    tests = sorted(p.name.replace("_0000.nii.gz", "") for p in (phantom_dataset.raw / "imagesTs").glob("*.nii.gz"))
    assert len(tests) == 2
    for m in models:  # where recipe.json's test commands write them, with probabilities
        assert any(f"-o {predictions / m} " in c for c in rec["commands"]["test"])
        assert sorted(p.name for p in (predictions / m).iterdir() if not p.name.endswith(".json")) == sorted(
            f"{c}{e}" for c in tests for e in (".nii.gz", ".npz", ".pkl"))
    written = _outputs(phantom_dataset.results, models, predictions)
    assert len(written) == len(models) * (2 + len(tests))

    again = run_cli(*args, timeout=900)
    assert f"recipe physionet2d: {steps} step(s) done" in again.stdout
    assert _outputs(phantom_dataset.results, models, predictions) == written  # nothing retrained or rewritten
    logs = out / "local" / "logs"
    assert all("already finished" in (logs / f"axial_{i}.log").read_text() for i in range(len(models)))
