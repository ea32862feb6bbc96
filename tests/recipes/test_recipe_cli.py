"""``nnunet-iph recipe`` on the phantom: plans written, outputs accepted by ``slurm plan``, refusals one line."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli


def _recipe(*args, check=True):
    return run_cli("nnunet-iph", "recipe", *args, check=check)


def test_midl2026_writes_window_plans_and_a_valid_experiment(phantom_dataset, tmp_path):
    out = tmp_path / "midl"
    proc = _recipe("midl2026", "-d", "501", "-o", str(out), "--no-preprocess")
    assert "not converted with --brain-mask" in proc.stderr  # the restriction fallback is stated
    rec = json.loads((out / "recipe.json").read_text())
    assert rec["brain"]["mode"] == "restrict" and rec["dataset"] == "Dataset501_IPHPhantom"
    coronal = json.loads((phantom_dataset.preprocessed / "nnUNetPlans_midl2026_coronal.json").read_text())
    source = json.loads((phantom_dataset.preprocessed / "nnUNetPlans_coronal.json").read_text())
    assert coronal["transpose_forward"] == source["transpose_forward"]
    props = coronal["foreground_intensity_properties_per_channel"]["0"]
    assert (props["percentile_00_5"], props["percentile_99_5"], props["mean"], props["std"]) == (-30, 100, -30, 130)
    assert coronal["configurations"]["2d"]["normalization_schemes"] == ["CTNormalization"]
    plan = run_cli("nnunet-iph", "slurm", "plan", str(out / "experiment.toml"), "-o", str(tmp_path / "slurm"),
                   "--dry-run")
    assert "nnUNetTrainerTransUNetAdam_fg100 nnUNetPlans_midl2026_sagittal 2d 4" in plan.stdout
    assert "nnUNetv2_ensemble" in plan.stdout and "--restrict-to-brain" in plan.stdout
    assert not (tmp_path / "slurm").exists()  # a dry run writes nothing
    commands = (out / "commands.sh").read_text()
    assert "nnUNetv2_preprocess -d 501 -plans_name nnUNetPlans_midl2026_axial -c 2d -np 2" in commands
    # identical rerun is fine; another grid into the same folder is refused, naming the files
    _recipe("midl2026", "-d", "501", "-o", str(out), "--no-preprocess")
    bad = _recipe("midl2026", "-d", "501", "-o", str(out), "--no-preprocess", "--folds", "0", check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith(f"nnunet-iph recipe: error: {out}: recipe.json, experiment.toml, commands.sh, "
                                 "README.md exist with different content")
    _recipe("midl2026", "-d", "501", "-o", str(out), "--no-preprocess", "--folds", "0", "--overwrite")
    assert json.loads((out / "recipe.json").read_text())["folds"] == [0]


def test_physionet2d_preprocesses_and_lists_the_local_run(phantom_dataset, tmp_path):
    out = tmp_path / "phys"
    proc = _recipe("physionet2d", "-d", "Dataset501_IPHPhantom", "-o", str(out), "--folds", "0", "1",
                   "--schedule", "1ep_2it_noTTA")
    assert "plans nnUNetPlans_axial: {'2d':" in proc.stdout
    assert any((phantom_dataset.preprocessed / "nnUNetPlans_axial_2d").glob("*.pkl"))
    dry = _recipe("physionet2d", "-d", "501", "-o", str(out), "--folds", "0", "1", "--schedule", "1ep_2it_noTTA",
                  "--run", "--dry-run", "--device", "cpu")
    lines = [line for line in dry.stdout.splitlines() if line.startswith("bash ")]
    assert lines[0] == (f"bash {out}/local/axial.sbatch 0  # nnUNetv2_train Dataset501_IPHPhantom 2d 0 -tr "
                        "nnUNetTrainerVGG16UNet_1ep_2it_noTTA -p nnUNetPlans_axial -device cpu --npz")
    assert len([line for line in lines if "nnUNetv2_train" in line]) == 8  # 4 trainers x 2 folds
    assert not (out / "local").exists()


def test_cascade_plans_record_the_scheduled_coarse_trainer(phantom_dataset, tmp_path):
    _recipe("coarse-fine", "-d", "501", "-o", str(tmp_path / "cf"), "--no-preprocess", "--schedule", "2ep_5it")
    plans = json.loads((phantom_dataset.preprocessed / "nnUNetPlans_cascade.json").read_text())
    assert plans["configurations"]["3d_fine"]["previous_stage_trainer"] == "nnUNetTrainerDenseNetCoarse_2ep_5it"
    bad = _recipe("coarse-fine", "-d", "501", "-o", str(tmp_path / "cf2"), "--no-preprocess", check=False)
    assert bad.returncode == 2 and "nnUNetPlans_cascade.json: its fine stage reads the coarse stage of " \
                                   "nnUNetTrainerDenseNetCoarse_2ep_5it" in bad.stderr
    run_cli("nnunet-iph", "slurm", "plan", str(tmp_path / "cf" / "experiment.toml"), "-o", str(tmp_path / "s"),
            "--dry-run")


@pytest.mark.parametrize("args, message", [
    (("midl", "-d", "501"), "unknown recipe 'midl'; choose from midl2026, deepbleed, physionet2d, coarse-fine"),
    # 997: no test creates it (599 is the converter tests' dataset in the same session folders)
    (("deepbleed", "-d", "997"), "dataset '997' not found"),
])
def test_refusals_are_one_line(phantom_dataset, tmp_path, args, message):
    proc = _recipe(*args, "-o", str(tmp_path / "x"), check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()
