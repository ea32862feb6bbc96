"""End to end on a tiny subset of the real PhysioNet CT-ICH scans: every step through the real
nnU-Net entry points, the results folder, and a re-run that skips everything (slow, ~5-10 min)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import run_cli

TINY = """
name = "ctich-tiny"
kind = "cpu"
dataset_id = 618
dataset_name = "CTICHtiny"

[data]
positives = 3
negatives = 2
seed = 0
folds = 2
eval_folds = [0]
tuning_fold = 1

[plan]
spacing_mm = 8.0
batch_size = 2
features_per_stage = [4, 8, 16]
max_patch = 32
arch_kwargs = { width = 0.125 }

[schedule]
epochs = 1
iterations = 2
tta = false

[runtime]
torch_threads = 1
training_seed = 0

[analysis]
# 2-iteration models paint most of the head: our surface distances would need > 20 GB per case
metric_source = "summary"

[[model]]
name = "nnU-Net"
trainer = "nnUNetTrainer"
baseline = true

[[model]]
name = "FPN"
trainer = "nnUNetTrainerFPN"
arch = true

[[model]]
name = "nnU-Net + brain mask"
trainer = "nnUNetTrainer"
restrict_to_brain = true

[[model]]
name = "MIDL FPN"
trainer = "nnUNetTrainerFPN"
arch = true
intensity = "midl2026"
restrict_to_brain = true

[[model]]
name = "focal+Dice 2.5D"
trainer = "nnUNetTrainerFocalDice"
planes = ["axial", "coronal", "sagittal"]
"""


@pytest.mark.slow
@pytest.mark.shared_data
def test_tiny_ctich_benchmark_runs_and_resumes(physionet_dir, tmp_path):
    protocol = tmp_path / "tiny.toml"
    protocol.write_text(TINY, encoding="utf-8")
    work = tmp_path / "work"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ("nnunet-iph", "benchmark", "ctich", "--data", str(physionet_dir), "--workdir", str(work),
            "--protocol", str(protocol), "--no-progress")
    run_cli(*args, timeout=1800, env=env)

    res = work / "results"
    for name in ("per_case.csv", "results_table.md", "results_table.csv", "paired_vs_baseline.csv", "README.md",
                 "run.json", "protocol.toml", "analysis/report.md"):
        assert (res / name).is_file(), name
    table = pd.read_csv(res / "results_table.csv")
    assert list(table["model"]) == ["nnU-Net", "FPN", "nnU-Net + brain mask", "MIDL FPN", "focal+Dice 2.5D"]
    per_case = pd.read_csv(res / "per_case.csv", dtype={"case": str})
    assert per_case.groupby("benchmark_model")["case"].nunique().nunique() == 1  # same cases for every model
    for col in ("dice", "empty_ref", "empty_pred", "benchmark_model", "trainer"):
        assert col in per_case.columns
    run = json.loads((res / "run.json").read_text())
    assert run["selection"]["n_positive"] == 3 and run["selection"]["n_negative"] == 2
    assert run["versions"]["nnunetv2"] and run["total_wall_s"] > 0
    assert {t["status"] for t in run["steps"] if not t["step"].startswith("results")} == {"done"}
    # the configuration every model trained on was derived for each plane
    assert set(run["configurations"]) == {"nnUNetPlans_axial", "nnUNetPlans_coronal", "nnUNetPlans_sagittal",
                                          "nnUNetPlans_midl2026_axial"}
    assert run["configurations"]["nnUNetPlans_coronal"]["spacing"] == [8.0, 8.0]  # 5 mm slices coarsened to 8 mm too
    # seeded training without test-time mirroring: the _noTTA schedule variant of every trainer
    trained = [p.name for p in (work / "nnunet" / "nnUNet_results" / "Dataset618_CTICHtiny").iterdir()
               if p.name.startswith("nnUNetTrainer")]
    assert len(trained) == 6 and all("_1ep_2it_noTTA__" in name for name in trained)
    # the window of the MIDL row reached its preprocessed data: [-30, 100] HU -> [0, 1]
    midl = work / "nnunet" / "nnUNet_preprocessed" / "Dataset618_CTICHtiny" / "nnUNetPlans_midl2026_axial.json"
    props = json.loads(midl.read_text())["foreground_intensity_properties_per_channel"]["0"]
    assert (props["mean"], props["std"]) == (-30.0, 130.0)
    # restricted rows: nothing outside the brain, and a stale restriction is not scored
    restricted = work / "nnunet" / "nnUNet_results" / "Dataset618_CTICHtiny" / "brain_restricted"
    assert sorted(p.name for p in restricted.iterdir()) == ["MIDL_FPN", "nnU-Net___brain_mask"]
    assert (restricted / "MIDL_FPN" / "summary.json").is_file()

    # second run: every step is skipped (only the report is rewritten), nothing retrained
    state_before = json.loads((work / "state.json").read_text())
    out = run_cli(*args, timeout=600, env=env)
    assert "already finished" in out.stdout
    state = json.loads((work / "state.json").read_text())
    for name, rec in state["steps"].items():
        if not name.startswith("results"):
            assert len(rec["attempts"]) == len(state_before["steps"][name]["attempts"]), name


@pytest.mark.shared_data
def test_cli_list_and_errors(tmp_path):
    out = run_cli("nnunet-iph", "benchmark", "ctich", "--workdir", str(tmp_path), "--list")
    assert "nnU-Net (baseline)" in out.stdout and "10 training run(s)" in out.stdout
    import subprocess
    import sys

    bin_dir = Path(sys.executable).parent
    proc = subprocess.run([str(bin_dir / "nnunet-iph"), "benchmark", "ctich", "--workdir",
                           str(Path(__file__).resolve().parents[2] / "w"), "--data", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "inside the repository" in proc.stderr
    proc = subprocess.run([str(bin_dir / "nnunet-iph"), "benchmark", "ctich", "--workdir", str(tmp_path / "w")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--data" in proc.stderr
