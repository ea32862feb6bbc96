"""Script generation, resume logic and submit/status bookkeeping, without SLURM or torch (fast)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_iph.cluster.experiment import build_experiment, load_experiment
from nnunet_iph.cluster.scripts import array_spec, render_script, write_plan
from nnunet_iph.cluster.slurm import (collect_rows, format_status, grid_status, input_cases, load_state,
                                      query_jobs, submit)

DATASET = "Dataset501_IPHPhantom"


def experiment_dict(workdir: Path, **over) -> dict:
    raw = {
        "name": "iph",
        "dataset": DATASET,
        "workdir": str(workdir),
        "device": "cuda",
        "resources": {"partition": "gpu", "account": "proj1", "cpus_per_task": 8, "mem": "64G",
                      "time": "1-00:00:00", "gpus": 1, "max_parallel": 3},
        "train": [{"name": "planes", "trainers": ["nnUNetTrainerFocalDice", "nnUNetTrainer"],
                   "plans": ["nnUNetPlans", "nnUNetPlans_coronal"], "configurations": ["2d"],
                   "folds": [0, 1], "npz": True}],
        "predict": [{"name": "test", "models": "planes", "input": str(workdir / "imagesTs"),
                     "output": str(workdir / "pred"), "num_parts": 2, "save_probabilities": True,
                     "ensemble": True}],
        "job": [{"name": "analysis", "after": ["planes", "test_ensemble"],
                 "command": "nnunet-iph slurm collect {out} -o {out}/grid.csv", "creates": ["{out}/grid.csv"]}],
    }
    raw.update(over)
    return raw


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    """nnUNetv2_* stand-ins that only record their arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("nnUNetv2_train", "nnUNetv2_predict", "nnUNetv2_ensemble"):
        path = bin_dir / tool
        path.write_text(f'#!/bin/bash\necho "CALL {tool} $* DA=$nnUNet_n_proc_DA OMP=$OMP_NUM_THREADS '
                        f'RES=$nnUNet_results EXT=$nnUNet_extTrainer"\n')
        path.chmod(0o755)
    return bin_dir


def test_grid_expansion_and_stage_order(tmp_path):
    exp = build_experiment(experiment_dict(tmp_path), out_dir=tmp_path / "out")
    assert [s.name for s in exp.stages] == ["planes", "test", "test_ensemble", "analysis"]
    train = exp.stage("planes")
    assert len(train.tasks) == 2 * 2 * 1 * 2
    assert {t.model for t in train.tasks} == {
        "nnUNetTrainerFocalDice__nnUNetPlans__2d", "nnUNetTrainerFocalDice__nnUNetPlans_coronal__2d",
        "nnUNetTrainer__nnUNetPlans__2d", "nnUNetTrainer__nnUNetPlans_coronal__2d"}
    assert exp.train_output(train.tasks[0]) == (
        f"{tmp_path}/nnUNet_results/{DATASET}/nnUNetTrainerFocalDice__nnUNetPlans__2d/fold_0")
    predict = exp.stage("test")
    assert predict.after == ["planes"] and len(predict.tasks) == 4 * 2 and predict.folds == ["0", "1"]
    ens = exp.stage("test_ensemble")
    assert ens.after == ["test"] and len(ens.inputs) == 4 and ens.resources.gpus == 0
    assert exp.stage("analysis").command == f"nnunet-iph slurm collect {tmp_path / 'out'} -o {tmp_path / 'out'}/grid.csv"


def test_train_script_resources_env_and_command(tmp_path):
    exp = build_experiment(experiment_dict(tmp_path, bin_dir="/opt/venv/bin"), out_dir=tmp_path / "out")
    text = render_script(exp, exp.stage("planes"), tmp_path / "out")
    for line in ["#SBATCH --array=0-7%3", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=64G",
                 "#SBATCH --time=1-00:00:00", "#SBATCH --partition=gpu", "#SBATCH --account=proj1",
                 "#SBATCH --gpus=1", "#SBATCH --requeue", "#SBATCH --job-name=iph-planes",
                 f"#SBATCH --output={tmp_path}/out/logs/iph-planes_%A_%a.out",
                 f"export nnUNet_results={tmp_path}/nnUNet_results", "export nnUNet_n_proc_DA=$CPUS",
                 "CPUS=${SLURM_CPUS_PER_TASK:-8}"]:
        assert line in text.splitlines(), line
    assert "export nnUNet_extTrainer=" in text and "nnunet_ext" in text
    assert ("exec /opt/venv/bin/nnUNetv2_train Dataset501_IPHPhantom \"$CONFIG\" \"$FOLD\" -tr \"$TRAINER\" "
            "-p \"$PLANS\" -device cuda --npz $RESUME") in text
    assert "-num_gpus" not in text
    # bash accepts it
    subprocess.run(["bash", "-n", "-c", text], check=True)


def test_multi_gpu_uses_num_gpus_and_splits_workers(tmp_path):
    raw = experiment_dict(tmp_path)
    raw["train"][0]["num_gpus"] = 4
    raw["resources"]["cpus_per_task"] = 32
    exp = build_experiment(raw, out_dir=tmp_path / "out")
    text = render_script(exp, exp.stage("planes"), tmp_path / "out")
    assert "#SBATCH --gpus=4" in text and "-num_gpus 4" in text
    assert "export nnUNet_n_proc_DA=$(( CPUS / 4 > 0 ? CPUS / 4 : 1 ))" in text
    raw["device"] = "cpu"
    with pytest.raises(ValueError, match="num_gpus > 1"):
        build_experiment(raw)
    # CPU runs request no GPU unless asked to
    raw["train"][0]["num_gpus"] = 1
    del raw["resources"]["gpus"]
    exp = build_experiment(raw, out_dir=tmp_path / "out")
    assert "--gpus" not in render_script(exp, exp.stage("planes"), tmp_path / "out")


def test_train_task_resume_skip_and_fresh(tmp_path, fake_bin):
    """The generated script, run as `bash SCRIPT INDEX`: fresh -> no --c, checkpoint -> --c, final -> skip."""
    exp = build_experiment(experiment_dict(tmp_path, bin_dir=str(fake_bin), device="cpu"), out_dir=tmp_path / "out")
    write_plan(exp, tmp_path / "out")
    script = tmp_path / "out" / "planes.sbatch"
    task = exp.stage("planes").tasks[3]
    fold = Path(exp.train_output(task))

    def run() -> str:
        env = {"PATH": "/usr/bin:/bin", "SLURM_CPUS_PER_TASK": "6"}
        proc = subprocess.run(["bash", str(script), "3"], capture_output=True, text=True, encoding="utf-8", errors="replace", env=env, check=True)
        return proc.stdout

    out = run()
    call = [line for line in out.splitlines() if line.startswith("CALL")]
    assert call == [f"CALL nnUNetv2_train {DATASET} 2d 1 -tr {task.trainer} -p {task.plans} -device cpu --npz "
                    f"DA=6 OMP=6 RES={tmp_path}/nnUNet_results EXT={exp.env['nnUNet_extTrainer']}"]
    fold.mkdir(parents=True)
    (fold / "checkpoint_latest.pth").write_bytes(b"x")
    out = run()
    assert "resuming from" in out and "checkpoint_latest.pth" in out and "--npz --c DA=6" in out
    (fold / "checkpoint_final.pth").write_bytes(b"x")
    out = run()
    assert "resuming from" in out and "checkpoint_final.pth" in out and "--c" in out  # validation only
    (fold / "validation").mkdir()
    (fold / "validation" / "summary.json").write_text("{}")
    out = run()
    assert "already finished" in out and "CALL" not in out
    proc = subprocess.run(["bash", str(script), "99"], capture_output=True, text=True, encoding="utf-8", errors="replace")
    assert proc.returncode == 2 and "no task 99" in proc.stderr


def test_predict_and_cascade_scripts(tmp_path, fake_bin):
    raw = experiment_dict(tmp_path, bin_dir=str(fake_bin))
    raw["train"] = [
        {"name": "lowres", "trainers": ["nnUNetTrainer"], "configurations": ["3d_lowres"], "folds": [0, 1, 2]},
        {"name": "fine", "trainers": ["nnUNetTrainer"], "configurations": ["3d_cascade_fullres"],
         "folds": [0, 1, 2], "after": ["lowres"]}]
    raw["predict"] = [
        {"name": "test_low", "models": "lowres", "input": str(tmp_path / "in"), "output": str(tmp_path / "p_low"),
         "num_parts": 3, "args": ["-npp", "2"]},
        {"name": "test_fine", "models": "fine", "input": str(tmp_path / "in"), "output": str(tmp_path / "p_fine"),
         "num_parts": 2, "prev_stage": "test_low"}]
    raw["job"] = []
    exp = build_experiment(raw, out_dir=tmp_path / "out")
    assert [s.name for s in exp.stages] == ["lowres", "fine", "test_low", "test_fine"]
    assert exp.stage("fine").after == ["lowres"]
    assert exp.stage("test_fine").after == ["fine", "test_low"]
    write_plan(exp, tmp_path / "out")
    proc = subprocess.run(["bash", str(tmp_path / "out" / "test_fine.sbatch"), "1"], capture_output=True,
                          text=True, encoding="utf-8", errors="replace", check=True, env={"PATH": "/usr/bin:/bin"})
    call = next(line for line in proc.stdout.splitlines() if line.startswith("CALL"))
    assert (f"-i {tmp_path}/in -o {tmp_path}/p_fine/nnUNetTrainer__nnUNetPlans__3d_cascade_fullres "
            f"-d {DATASET} -tr nnUNetTrainer -p nnUNetPlans -c 3d_cascade_fullres -f 0 1 2 -num_parts 2 -part_id 1 "
            "-device cuda --continue_prediction -prev_stage_predictions "
            f"{tmp_path}/p_low/nnUNetTrainer__nnUNetPlans__3d_lowres") in call
    text = (tmp_path / "out" / "test_low.sbatch").read_text(encoding="utf-8")
    assert "#SBATCH --array=0-2%3" in text and "-npp 2" in text


@pytest.mark.parametrize("change, message", [
    ({"bogus": 1}, "unknown top-level keys"),
    ({"dataset": "x y"}, "dataset must be"),
    ({"job": [{"name": "a", "command": "true", "after": ["nope"]}]}, "unknown stage 'nope'"),
    ({"job": [{"name": "a", "command": "true", "after": ["b"]}, {"name": "b", "command": "true", "after": ["a"]}]},
     "dependency cycle"),
    ({"predict": [{"name": "t", "models": "planes", "input": "i", "output": "o", "ensemble": True}]},
     "save_probabilities"),
    ({"predict": [{"name": "t", "models": "nope", "input": "i", "output": "o"}]}, "must name a"),
    ({"resources": {"gpu": 1}}, "unknown resource keys"),
    ({"job": [{"name": "a", "command": "echo {nope}"}]}, "bad placeholder"),
    ({"train": [{"name": "t", "trainers": ["nnUNetTrainer"], "configurations": ["2d"], "folds": ["x"]}]},
     "folds must be"),
])
def test_invalid_experiments_raise_value_error(tmp_path, change, message):
    raw = experiment_dict(tmp_path)
    raw.update(change)
    with pytest.raises(ValueError, match=message):
        build_experiment(raw)


def test_dataset_id_resolved_from_disk_and_file_formats(tmp_path):
    (tmp_path / "nnUNet_preprocessed" / DATASET).mkdir(parents=True)
    (tmp_path / "nnUNet_preprocessed" / DATASET / "nnUNetPlans.json").write_text('{"configurations": {"2d": {}}}')
    toml = tmp_path / "exp.toml"
    toml.write_text('dataset = 501\nworkdir = "."\n[[train]]\ntrainers = ["nnUNetTrainer"]\n'
                    'configurations = ["2d"]\nfolds = [0]\n')
    exp = load_experiment(toml)
    assert exp.dataset == DATASET and exp.env["nnUNet_raw"] == str(tmp_path / "nnUNet_raw")
    js = tmp_path / "exp.json"
    js.write_text(json.dumps({"dataset": 502, "workdir": ".", "train": [
        {"trainers": ["nnUNetTrainer"], "configurations": ["2d"]}]}))
    with pytest.raises(ValueError, match="Dataset502_"):
        load_experiment(js)
    with pytest.raises(FileNotFoundError):
        load_experiment(tmp_path / "missing.toml")


def test_array_spec():
    assert array_spec([0, 1, 2, 3]) == "0-3"
    assert array_spec([5, 0, 1, 3, 7, 8], 2) == "0-1,3,5,7-8%2"
    assert array_spec([4]) == "4"


class FakeSlurm:
    """Answers sbatch/squeue/sacct/scontrol like a cluster without accounting."""

    def __init__(self):
        self.next_id = 100
        self.calls: list[list[str]] = []
        self.squeue: dict[str, str] = {}  # "101_2" -> "RUNNING|None"
        self.scontrol: dict[str, str] = {}  # job id -> output

    def __call__(self, args, **kwargs):
        self.calls.append(list(args))
        out, rc = "", 0
        if args[0] == "sbatch":
            self.next_id += 1
            out = f"{self.next_id}\n"
        elif args[0] == "squeue":
            jid = args[-1]
            lines = [f"{k}|{v}" for k, v in self.squeue.items() if k.split("_")[0] == jid]
            out, rc = "\n".join(lines), 0
        elif args[0] == "sacct":
            rc, out = 1, "Slurm accounting storage is disabled"
        elif args[0] == "scontrol":
            jid = args[-1]
            out = self.scontrol.get(jid, "")
            rc = 0 if out else 1
        return subprocess.CompletedProcess(args, rc, out, "")


def test_submit_chains_dependencies_and_records_state(tmp_path):
    exp = build_experiment(experiment_dict(tmp_path), out_dir=tmp_path / "out")
    write_plan(exp, tmp_path / "out")
    fake = FakeSlurm()
    subs = submit(tmp_path / "out", runner=fake, echo=lambda s: None)
    sb = [c for c in fake.calls if c[0] == "sbatch"]
    assert [c[-1].rsplit("/", 1)[1] for c in sb] == ["planes.sbatch", "test.sbatch", "test_ensemble.sbatch",
                                                    "analysis.sbatch"]
    assert "--dependency=afterok:101" in sb[1] and "--dependency=afterok:102" in sb[2]
    assert "--dependency=afterok:101:103" in sb[3]
    assert not any(a.startswith("--array") for c in sb for a in c)  # the script's own full array
    state = load_state(tmp_path / "out")
    assert [s["job_id"] for s in state["submissions"]] == ["101", "102", "103", "104"]
    assert len(subs[0].tasks) == 8

    # status: one fold done on disk, one running, one failed, rest completed without outputs/unknown
    tasks = exp.stage("planes").tasks
    done_fold = Path(exp.train_output(tasks[0]))
    (done_fold / "validation").mkdir(parents=True)
    (done_fold / "checkpoint_final.pth").write_bytes(b"x")
    (done_fold / "validation" / "summary.json").write_text(json.dumps(
        {"foreground_mean": {"Dice": 0.5}, "metric_per_case": [{}, {}]}))
    Path(exp.train_output(tasks[2])).mkdir(parents=True)
    (Path(exp.train_output(tasks[2])) / "checkpoint_latest.pth").write_bytes(b"x")
    fake.squeue = {"101_1": "RUNNING|None", **{f"102_{i}": "PENDING|Dependency" for i in range(8)}}
    fake.scontrol = {"101": "\n".join(
        f"JobId={200 + i} ArrayJobId=101 ArrayTaskId={i} JobState={st} Reason=None ExitCode={ec}"
        for i, st, ec in [(0, "COMPLETED", "0:0"), (2, "CANCELLED", "0:15"), (3, "FAILED", "1:0"),
                          (4, "COMPLETED", "0:0")]),
        "104": "JobId=104 JobName=iph-analysis JobState=CANCELLED Reason=Dependency ExitCode=0:0"}
    statuses = grid_status(tmp_path / "out", runner=fake)
    by = {(s.stage, s.index): s for s in statuses}
    assert by[("planes", 0)].state == "done"
    assert by[("planes", 1)].state == "running" and by[("planes", 1)].job_id == "101_1"
    assert by[("planes", 2)].state == "failed" and "will resume" in by[("planes", 2)].detail
    assert by[("planes", 3)].state == "failed"
    assert by[("planes", 4)].state == "failed" and "completed but outputs incomplete" in by[("planes", 4)].detail
    assert by[("planes", 5)].state == "failed"  # submitted, SLURM forgot it, no outputs
    assert by[("test", 0)].state == "pending"
    assert by[("test_ensemble", None)].state == "unknown"  # no record, outputs not checkable (no input dir)
    assert by[("analysis", None)].state == "failed" and by[("analysis", None)].slurm_state == "CANCELLED"
    text = format_status(statuses, tmp_path / "out", "exp.toml")
    assert "--resubmit" in text and "sbatch --array=2-7" in text and "log:" in text

    # resubmit: only failed planes tasks; downstream stages depend on the new job and on active ones
    with pytest.raises(ValueError, match="still queued or running"):
        submit(tmp_path / "out", runner=fake, echo=lambda s: None)
    fake.calls.clear()
    subs = submit(tmp_path / "out", resubmit=True, runner=fake, echo=lambda s: None)
    sb = [c for c in fake.calls if c[0] == "sbatch"]
    assert "--array=2-7%3" in sb[0] and sb[0][-1].endswith("planes.sbatch")
    assert [s.stage for s in subs] == ["planes", "test_ensemble", "analysis"]  # test is still pending
    assert "--dependency=afterok:102" in sb[1]  # ensemble waits for the still-pending predict job
    assert "--dependency=afterok:105:106" in sb[2]

    rows = collect_rows(tmp_path / "out")
    assert len(rows) == 8 and rows[0]["dice"] == "0.5" and rows[0]["n_cases"] == 2 and rows[1]["done"] is False


def test_scontrol_pending_array_range_and_sacct(tmp_path):
    class Runner:
        def __call__(self, args, **kwargs):
            if args[0] == "squeue":
                return subprocess.CompletedProcess(args, 1, "", "Invalid job id")
            if args[0] == "sacct":
                return subprocess.CompletedProcess(args, 0, "7_0|COMPLETED|0:0\n7_1|CANCELLED by 0|0:15\n", "")
            return subprocess.CompletedProcess(
                args, 0, "JobId=9 ArrayJobId=9 ArrayTaskId=0-2%1 JobState=PENDING Reason=Priority\n", "")

    info = query_jobs(["7", "9"], Runner())
    assert info["7_0"].state == "COMPLETED" and info["7_1"].state == "CANCELLED"
    assert [info[f"9_{i}"].state for i in range(3)] == ["PENDING"] * 3


def test_input_cases_match_nnunet_part_split(tmp_path):
    for name in ["b_0000.nii.gz", "a_0000.nii.gz", "a_0001.nii.gz", "c_0000.nii.gz", "notes.txt"]:
        (tmp_path / name).write_bytes(b"")
    assert input_cases(str(tmp_path), ".nii.gz") == ["a", "b", "c"]
    assert input_cases(str(tmp_path / "nope"), ".nii.gz") is None


def test_cli_plan_dry_run_and_errors(tmp_path):
    exp_file = tmp_path / "exp.json"
    exp_file.write_text(json.dumps(experiment_dict(tmp_path)))
    cmd = [sys.executable, "-m", "nnunet_iph.cli", "slurm", "plan", str(exp_file), "-o", str(tmp_path / "o")]
    proc = subprocess.run([*cmd, "--dry-run"], capture_output=True, text=True, encoding="utf-8", errors="replace", check=True)
    assert proc.stdout.count("#!/bin/bash") == 4 and not (tmp_path / "o").exists()
    proc = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace", check=True)
    assert (tmp_path / "o" / "plan.json").is_file() and (tmp_path / "o" / "logs").is_dir()
    proc = subprocess.run([sys.executable, "-m", "nnunet_iph.cli", "slurm", "status", str(tmp_path / "o")],
                          capture_output=True, text=True, encoding="utf-8", errors="replace", check=True)
    assert "missing" in proc.stdout and "--resubmit" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "nnunet_iph.cli", "slurm", "plan", str(tmp_path / "no.toml"),
                           "-o", str(tmp_path / "o")], capture_output=True, text=True, encoding="utf-8", errors="replace")
    assert proc.returncode == 2 and "no.toml" in proc.stderr


def test_planning_does_not_import_torch():
    code = ("import sys, nnunet_iph.cluster, nnunet_iph.cluster.slurm, nnunet_iph.commands.slurm; "
            "assert 'torch' not in sys.modules and 'nnunetv2' not in sys.modules, 'heavy import'")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})


def test_rejected_sbatch_is_a_clean_error_and_keeps_earlier_submissions(tmp_path):
    exp = build_experiment(experiment_dict(tmp_path), out_dir=tmp_path / "out")
    write_plan(exp, tmp_path / "out")
    fake = FakeSlurm()

    def runner(args, **kwargs):
        if args[0] == "sbatch" and args[-1].endswith("test.sbatch"):
            return subprocess.CompletedProcess(args, 1, "", "sbatch: error: invalid partition specified: gpu")
        return fake(args, **kwargs)

    with pytest.raises(ValueError, match="invalid partition"):
        submit(tmp_path / "out", runner=runner, echo=lambda s: None)
    assert [s["stage"] for s in load_state(tmp_path / "out")["submissions"]] == ["planes"]
