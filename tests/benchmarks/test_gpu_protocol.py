"""GPU protocol: the experiment file trains every run the results table needs, and `nnunet-iph slurm
plan --dry-run` renders its scripts (no SLURM, no GPU, no nnU-Net import; fast)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nnunet_iph.benchmarking.protocol import load_protocol
from nnunet_iph.planning import PLANES

REPO = Path(__file__).resolve().parents[2]
GPU = REPO / "benchmarks" / "ctich" / "gpu.toml"
EXPERIMENT = REPO / "benchmarks" / "ctich" / "gpu_experiment.toml"


@pytest.fixture
def nnunet_folders(tmp_path, monkeypatch):
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, str(tmp_path / "nnunet" / var))
    return tmp_path


def fake_plans(bench) -> None:
    """The plans files `nnunet-iph plan` writes before the scripts (only their configuration names)."""
    import json

    configurations = {"nnUNetPlans": ["2d", "3d_fullres"], "nnUNetPlans_cascade": ["2d_coarse", "3d_fine"],
                      **{f"nnUNetPlans_{p}": ["2d"] for p in PLANES}}
    bench.preprocessed.mkdir(parents=True, exist_ok=True)
    for plans, configs in configurations.items():
        (bench.preprocessed / f"{plans}.json").write_text(json.dumps({"configurations": dict.fromkeys(configs, {})}))


def test_experiment_covers_the_protocol(nnunet_folders, monkeypatch):
    from nnunet_iph.benchmarking.ctich import CTICHBenchmark
    from nnunet_iph.benchmarking.gpu import check_experiment_covers, load_gpu_experiment

    bench = CTICHBenchmark(load_protocol(GPU), nnunet_folders / "w", progress=False)
    for key, value in bench.env.items():
        monkeypatch.setenv(key, value)
    fake_plans(bench)
    exp = load_gpu_experiment(bench)
    train = [s for s in exp.stages if s.kind == "train"]
    assert sum(len(s.tasks) for s in train) == 5 * (1 + 1 + 1 + 15 + 1 + 1)
    assert exp.stage("fine").after == ["coarse"] and exp.device == "cuda"
    assert all(s.npz for s in train)
    # a protocol model the experiment does not train is refused with the file named
    exp.stages = [s for s in exp.stages if s.name != "planes"]
    with pytest.raises(ValueError, match="does not train 75 run"):
        check_experiment_covers(bench, exp)


def test_slurm_plan_dry_run_renders_every_stage(nnunet_folders, capsys):
    from nnunet_iph.cli import main

    assert main(["slurm", "plan", str(EXPERIMENT), "-o", str(nnunet_folders / "slurm"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    for stage in ("nnunet", "nnunet3d", "focal", "planes", "coarse", "fine", "analysis"):
        assert f"/{stage}.sbatch" in out
    assert "#SBATCH --array=0-74%20" in out  # 5 architectures x 3 planes x 5 folds
    assert "nnUNetTrainerSwinUNet nnUNetPlans_sagittal 2d 4" in out
    assert "-device cuda --npz" in out
    assert "nnunet-iph benchmark ctich --protocol gpu --workdir" in out
    assert not (nnunet_folders / "slurm").exists()


def test_gpu_prepare_only_writes_scripts_without_training(nnunet_folders, monkeypatch):
    """Preparation steps on a fake dataset whose conversion and plans 'exist': only the scripts are written."""
    import json

    from nnunet_iph.benchmarking.ctich import CTICHBenchmark

    bench = CTICHBenchmark(load_protocol(GPU), nnunet_folders / "w", progress=False)
    steps = __import__("nnunet_iph.benchmarking.gpu", fromlist=["gpu_steps"]).gpu_steps(bench)
    assert [s.name.split(" ")[0] for s in steps] == ["select", "convert", "plan", "write"]
    # nothing trained yet: no ensemble / analysis steps
    assert not any(s.name.startswith(("ensemble", "evaluate")) for s in steps)
    json.dumps([s.name for s in steps])
