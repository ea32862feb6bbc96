"""``nnunet-iph demo``: the model list it builds, and the quick demo end to end through the real CLIs."""

from __future__ import annotations

import json
import os
import re

import pytest

from nnunet_iph.demo import DEFAULT, QUICK, demo_models, run_demo
from tests.conftest import run_cli


def test_default_demo_covers_single_models_an_architecture_a_25d_ensemble_and_a_cascade():
    models = {m.label: m for m in demo_models(DEFAULT)}
    assert {"nnUNetTrainer", "nnUNetTrainerFocalDice", "nnUNetTrainerFPN"} <= set(models)
    planes = models["2.5D-nnUNetTrainerFocalDice"]
    assert [t.plans for t in planes.trainings] == ["nnUNetPlans_axial", "nnUNetPlans_coronal", "nnUNetPlans_sagittal"]
    cascade = models["cascade-DenseNetCoarse-CascadeFine"]
    coarse, fine = cascade.trainings[:-1], cascade.trainings[-1]
    assert [t.fold for t in coarse] == [str(f) for f in range(DEFAULT.folds)]  # the fine stage needs every fold's coarse output
    assert fine.configuration == "2d_fine" and "nnUNetTrainerCascadeFine" in fine.trainer
    for m in models.values():
        epochs, iterations = ((DEFAULT.epochs, DEFAULT.iterations) if m.kind == "single model"
                              else (DEFAULT.showcase_epochs, DEFAULT.showcase_iterations))
        assert all(t.trainer.endswith(f"_{epochs}ep_{iterations}it_noTTA") for t in m.trainings), m.label


def test_demo_refuses_a_workdir_holding_another_cohort(tmp_path, monkeypatch):
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer", "nnUNet_n_proc_DA",
                "nnUNet_def_n_proc", "nnUNet_compile"):  # run_demo sets them; restored after the test
        monkeypatch.setenv(var, os.environ.get(var, ""))
    (tmp_path / "cohort.json").write_text(json.dumps({"subjects": 99}), encoding="utf-8")
    with pytest.raises(ValueError, match="another cohort"):
        run_demo(tmp_path, QUICK, progress=False)
    assert not (tmp_path / "phantom").exists()


@pytest.mark.slow
def test_quick_demo_writes_a_report_with_dice_per_trainer_and_figures(tmp_path):
    workdir = tmp_path / "demo"
    proc = run_cli("nnunet-iph", "demo", "--quick", "--workdir", str(workdir), timeout=1800)
    assert "report:" in proc.stdout
    report = (workdir / "report.md").read_text(encoding="utf-8")
    for model in demo_models(QUICK):
        row = re.search(rf"^\| `{re.escape(model.label)}` \|.*\| (\d\.\d{{3}}) \|", report, re.M)
        assert row, f"no Dice row for {model.label}"
    figures = re.findall(r"!\[[^]]*\]\(([^)]+\.png)\)", report)
    assert len(figures) == len(demo_models(QUICK)) and all((workdir / f).stat().st_size > 1000 for f in figures)
    assert (workdir / "analysis" / "report.md").is_file()
    recorded = json.loads(report.split("```json")[1].split("```")[0])
    assert recorded["settings"]["seed"] == QUICK.seed and recorded["versions"]["nnunetv2"].startswith("2.8")
