"""End to end on a real single-node SLURM (slurmctld + slurmd + munged started by scripts/slurm_local.sh).

Skipped with the reason when SLURM can't be installed or started (not root, no apt, daemons fail).
The jobs run with ``--export=NONE``: they see only what the generated scripts export.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SLURM_LOCAL = REPO / "scripts" / "slurm_local.sh"
EXT_TRAINERS = Path(__file__).resolve().parent / "ext_trainers"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def slurm_env():
    """Environment with SLURM_CONF of a private local cluster; daemons stopped by pid afterwards."""
    if shutil.which("bash") is None:
        pytest.skip("bash not available")
    proc = subprocess.run(["bash", str(SLURM_LOCAL), "install"], capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=900)
    if proc.returncode != 0:
        pytest.skip(f"SLURM not available: {proc.stderr.strip() or proc.stdout.strip()}")
    # not under pytest's 0700 tmp root: munged wants its socket path traversable by everyone
    state_dir = Path(tempfile.mkdtemp(prefix="nnunet_iph_slurm_", dir="/tmp"))
    try:
        proc = subprocess.run(["bash", str(SLURM_LOCAL), "start", str(state_dir)], capture_output=True, text=True, encoding="utf-8", errors="replace",
                              timeout=180)
        if proc.returncode != 0:
            pytest.skip(f"local SLURM could not be started: {proc.stderr.strip()[-1500:]}")
        yield {**os.environ, "SLURM_CONF": str(state_dir / "slurm.conf")}
    finally:
        subprocess.run(["bash", str(SLURM_LOCAL), "stop", str(state_dir)], capture_output=True, timeout=60)
        if not os.environ.get("NNUNET_IPH_KEEP_TEST_DIR"):
            shutil.rmtree(state_dir, ignore_errors=True)


def cli(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN / "nnunet-iph"), "slurm", *args], capture_output=True, text=True, encoding="utf-8", errors="replace", env=env,
                          timeout=timeout)
    assert proc.returncode == 0, f"nnunet-iph slurm {' '.join(args)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def statuses(env: dict, out: Path) -> list[dict]:
    """In-process (the CLI's start-up would cost CPU on every poll); SLURM commands get ``env``."""
    from dataclasses import asdict

    from nnunet_iph.cluster.slurm import grid_status

    def runner(args, **kwargs):
        return subprocess.run(args, env=env, **kwargs)

    return [asdict(s) for s in grid_status(out, runner=runner)]


def wait_until_settled(env: dict, out: Path, timeout: float) -> list[dict]:
    """Poll until nothing is pending or running; on timeout show status and logs."""
    deadline = time.monotonic() + timeout
    while True:
        st = statuses(env, out)
        if not any(s["state"] in ("pending", "running") for s in st):
            return st
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p}\n{p.read_text(encoding='utf-8')[-1500:]}" for p in sorted((out / "logs").glob("*.out")))
            pytest.fail(f"grid not finished after {timeout}s:\n{cli(env, 'status', str(out)).stdout}\n{logs}")
        time.sleep(5)


def wait_job_gone(env: dict, job_id: str, timeout: float) -> None:
    """Until squeue no longer lists the job (its outputs may say "done" before it even started)."""
    deadline = time.monotonic() + timeout
    while subprocess.run(["squeue", "-h", "-j", job_id], env=env, capture_output=True, text=True, encoding="utf-8", errors="replace").stdout.strip():
        assert time.monotonic() < deadline, f"job {job_id} still queued after {timeout}s"
        time.sleep(2)


def describe(env: dict, out: Path) -> str:
    logs = "\n".join(f"--- {p.name}\n{p.read_text(encoding='utf-8')[-2500:]}" for p in sorted((out / "logs").glob("*.out")))
    return f"{cli(env, 'status', str(out)).stdout}\n{logs}"


def base_experiment(phantom_dataset) -> dict:
    return {
        "name": "iphtest",
        "dataset": 501,
        "workdir": str(phantom_dataset.raw.parents[1]),
        "device": "cpu",
        "env": {"nnUNet_compile": "f"},
        # one CPU per task: two tasks run side by side on the 2-core test machine
        "resources": {"cpus_per_task": 1, "mem": "3G", "time": "00:30:00", "gpus": 0,
                      "extra": ["--export=NONE"]},
    }


def test_grid_with_prediction_and_dependent_analysis(slurm_env, phantom_dataset, tmp_path):
    """2 trainers x 2 folds, prediction split in 2 parts per model, analysis after both."""
    out = tmp_path / "slurm"
    pred = tmp_path / "pred"
    exp = base_experiment(phantom_dataset)
    trainers = ["nnUNetTrainer_1ep_2it", "nnUNetTrainerFocalDice_1ep_2it"]
    exp["train"] = [{"name": "grid", "trainers": trainers, "configurations": ["2d"], "folds": [0, 1]}]
    exp["predict"] = [{"name": "test", "models": "grid", "input": str(phantom_dataset.raw / "imagesTs"),
                       "output": str(pred), "num_parts": 2, "folds": [0],
                       "args": ["-npp", "0", "-nps", "0", "--disable_tta"]}]
    exp["job"] = [{"name": "analysis", "after": ["grid", "test"],
                   "command": "nnunet-iph slurm collect {out} -o {out}/grid_summary.csv",
                   "creates": ["{out}/grid_summary.csv"]}]
    exp_file = tmp_path / "experiment.json"
    exp_file.write_text(json.dumps(exp, indent=1))

    t0 = time.monotonic()
    proc = cli(slurm_env, "submit", str(exp_file), "-o", str(out))
    assert proc.stdout.count("submitted job") == 3
    submissions = json.loads((out / "slurm_state.json").read_text(encoding="utf-8"))["submissions"]
    assert [s["stage"] for s in submissions] == ["grid", "test", "analysis"]
    grid_id, test_id = submissions[0]["job_id"], submissions[1]["job_id"]
    assert submissions[1]["dependency"] == [grid_id]
    assert submissions[2]["dependency"] == [grid_id, test_id]

    final = wait_until_settled(slurm_env, out, timeout=1500)
    print(f"grid on local SLURM: {time.monotonic() - t0:.0f} s")
    assert [s["state"] for s in final] == ["done"] * len(final), describe(slurm_env, out)
    assert len(final) == 4 + 4 + 1

    for trainer in trainers:
        for fold in (0, 1):
            fold_dir = phantom_dataset.results / f"{trainer}__nnUNetPlans__2d" / f"fold_{fold}"
            assert (fold_dir / "checkpoint_final.pth").is_file()
            assert (fold_dir / "validation" / "summary.json").is_file()
        cases = sorted(p.name.replace("_0000.nii.gz", ".nii.gz")
                       for p in (phantom_dataset.raw / "imagesTs").glob("*_0000.nii.gz"))
        assert sorted(p.name for p in (pred / f"{trainer}__nnUNetPlans__2d").glob("*.nii.gz")) == cases
    with open(out / "grid_summary.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and all(r["done"] == "True" and r["dice"] != "" for r in rows)
    # each array task ran once with its own log; the analysis waited for everything
    logs = {p.name for p in (out / "logs").glob("*.out")}
    assert {f"iphtest-grid_{grid_id}_{i}.out" for i in range(4)} <= logs
    text = cli(slurm_env, "status", str(out)).stdout
    assert "all tasks done" in text

    # a second submission finds everything finished: tasks exit at once, nothing retrains
    cli(slurm_env, "submit", str(exp_file), "-o", str(out), "--stages", "grid")
    second = json.loads((out / "slurm_state.json").read_text(encoding="utf-8"))["submissions"][-1]["job_id"]
    wait_job_gone(slurm_env, second, timeout=300)
    assert all(s["state"] == "done" for s in statuses(slurm_env, out))
    assert "already finished" in (out / "logs" / f"iphtest-grid_{second}_0.out").read_text(encoding="utf-8")


def _epochs_in(log: Path) -> list[int]:
    return [int(m) for m in re.findall(r"^\S.*?: Epoch (\d+)\s*$", log.read_text(encoding="utf-8"), flags=re.M)]


def test_cancelled_training_resumes_from_checkpoint(slurm_env, phantom_dataset, tmp_path):
    out = tmp_path / "slurm"
    exp = base_experiment(phantom_dataset)
    exp["ext_trainer_dirs"] = [str(EXT_TRAINERS)]
    exp["resources"]["cpus_per_task"] = 2
    exp["train"] = [{"name": "long", "trainers": ["nnUNetTrainerResumeTest"], "configurations": ["2d"],
                     "folds": [0]}]
    exp_file = tmp_path / "experiment.json"
    exp_file.write_text(json.dumps(exp))
    fold_dir = phantom_dataset.results / "nnUNetTrainerResumeTest__nnUNetPlans__2d" / "fold_0"

    cli(slurm_env, "submit", str(exp_file), "-o", str(out))
    job_id = json.loads((out / "slurm_state.json").read_text(encoding="utf-8"))["submissions"][0]["job_id"]
    deadline = time.monotonic() + 600
    while not (fold_dir / "checkpoint_latest.pth").is_file() or len(_training_epochs(fold_dir)) < 2:
        if time.monotonic() > deadline or statuses(slurm_env, out)[0]["state"] not in ("pending", "running"):
            pytest.fail(f"no checkpoint_latest.pth in {fold_dir}:\n{describe(slurm_env, out)}")
        time.sleep(2)
    subprocess.run(["scancel", job_id], env=slurm_env, check=True)
    deadline = time.monotonic() + 120
    while statuses(slurm_env, out)[0]["state"] in ("pending", "running"):
        assert time.monotonic() < deadline, "scancel did not stop the job"
        time.sleep(2)
    st = statuses(slurm_env, out)[0]
    assert st["state"] == "failed" and st["slurm_state"] == "CANCELLED", st
    assert "will resume" in st["detail"]
    assert not (fold_dir / "checkpoint_final.pth").exists()
    epochs_before = _training_epochs(fold_dir)

    cli(slurm_env, "submit", str(exp_file), "-o", str(out), "--resubmit")
    final = wait_until_settled(slurm_env, out, timeout=900)
    assert final[0]["state"] == "done", describe(slurm_env, out)
    resumed_log = Path(final[0]["log"]).read_text(encoding="utf-8")
    assert "resuming from" in resumed_log and "checkpoint_latest.pth" in resumed_log
    logs = sorted(fold_dir.glob("training_log_*.txt"))
    assert len(logs) >= 2, logs
    first_epoch_after_resume = _epochs_in(logs[-1])[0]
    assert first_epoch_after_resume > 0 and first_epoch_after_resume <= max(epochs_before) + 1
    assert _epochs_in(logs[-1])[-1] == 7  # finished the schedule without starting over
    assert (fold_dir / "checkpoint_final.pth").is_file()


def _training_epochs(fold_dir: Path) -> list[int]:
    logs = sorted(fold_dir.glob("training_log_*.txt"))
    return _epochs_in(logs[-1]) if logs else []
