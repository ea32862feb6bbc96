"""Submit a planned grid with the real ``sbatch`` and tell what is done, running, failed or missing.

Why both SLURM and the results folders: SLURM forgets finished jobs (``MinJobAge``) and many
sites have no accounting (``sacct``), while files on disk are the ground truth of nnU-Net runs.
A task is *done* when its outputs exist, whatever SLURM says; SLURM only explains the rest
(pending, running, failed, cancelled, timed out). Everything submitted is recorded in
``<out>/slurm_state.json`` so ``status`` and ``submit --resubmit`` work from another shell later.

SLURM commands run through a replaceable ``runner`` (``subprocess.run``-like) so the logic is
unit-tested without a cluster.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from nnunet_iph.cluster.scripts import PLAN_FILE, array_spec

STATE_FILE = "slurm_state.json"
Runner = Callable[..., subprocess.CompletedProcess]

ACTIVE_PENDING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD",
                  "SUSPENDED", "STOPPED", "RESIZING"}
ACTIVE_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}
FAILED = {"FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
          "DEADLINE", "REVOKED", "SPECIAL_EXIT"}
RESUBMIT = ("failed", "missing", "unknown", "blocked")


@dataclass
class JobInfo:
    state: str  # SLURM state, first word upper-case (CANCELLED, not "CANCELLED by 0")
    reason: str = ""
    exit_code: str = ""
    source: str = ""  # squeue | sacct | scontrol


@dataclass
class TaskStatus:
    stage: str
    index: int | None  # array index; None for single jobs
    label: str
    state: str  # done | running | pending | blocked | failed | missing | unknown
    job_id: str | None = None  # "123_4" for array tasks
    slurm_state: str | None = None
    detail: str = ""
    log: str | None = None


# --------------------------------------------------------------------------- plan and state files


def load_plan(out_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(out_dir) / PLAN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no plan here; run `nnunet-iph slurm plan EXP -o {out_dir}` first")
    return json.loads(path.read_text(encoding="utf-8"))


def load_state(out_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(out_dir) / STATE_FILE
    if not path.is_file():
        return {"submissions": []}
    return json.loads(path.read_text(encoding="utf-8"))


def save_state(out_dir: str | os.PathLike, state: dict[str, Any]) -> None:
    from nnunet_iph.imageio import write_json

    write_json(state, Path(out_dir) / STATE_FILE)


def task_label(task: dict[str, Any]) -> str:
    """Stable name of a task across re-plans (indices may move when the grid is edited)."""
    if task["kind"] == "TrainTask":
        return f"{task['model']}/fold_{task['fold']}"
    return f"{task['model']}/part_{task['part']}"


def stage_labels(stage: dict[str, Any]) -> list[str]:
    return [task_label(t) for t in stage["tasks"]] if stage["tasks"] else [stage["name"]]


# --------------------------------------------------------------------------- running SLURM commands


def _run(runner: Runner, args: list[str]) -> subprocess.CompletedProcess:
    try:
        return runner(args, capture_output=True, text=True, encoding="utf-8", errors="replace", check=False)
    except FileNotFoundError:
        return subprocess.CompletedProcess(args, 127, "", f"{args[0]}: command not found")


def sbatch(script: str, array: str | None = None, dependency: list[str] | None = None,
           runner: Runner = subprocess.run) -> str:
    """Submit one script with ``sbatch --parsable``; returns the job id."""
    if runner is subprocess.run and shutil.which("sbatch") is None:
        raise FileNotFoundError("sbatch: not found on PATH (run on a SLURM login node, or see scripts/slurm_local.sh)")
    args = ["sbatch", "--parsable"]
    if array:
        args.append(f"--array={array}")
    if dependency:
        args.append("--dependency=afterok:" + ":".join(dependency))
    args.append(script)
    proc = _run(runner, args)
    if proc.returncode != 0:  # the cluster rejected the request (partition, account, limits): a user error
        raise ValueError(f"{script}: {' '.join(args)} failed ({proc.returncode}): "
                         f"{proc.stderr.strip() or proc.stdout.strip()}")
    job_id = proc.stdout.strip().splitlines()[-1].split(";")[0].strip() if proc.stdout.strip() else ""
    if not job_id.isdigit():
        raise RuntimeError(f"{' '.join(args)}: unexpected output {proc.stdout!r}")
    return job_id


def _expand_task_ids(spec: str) -> list[str]:
    """``0-3,7%2`` -> ['0', '1', '2', '3', '7'] (scontrol's ArrayTaskId of a pending array)."""
    spec = spec.split("%")[0]
    out: list[str] = []
    for part in spec.split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            if lo.isdigit() and hi.isdigit():
                out += [str(i) for i in range(int(lo), int(hi) + 1)]
        elif part.isdigit():
            out.append(part)
    return out


def query_jobs(job_ids: Iterable[str], runner: Runner = subprocess.run) -> dict[str, JobInfo]:
    """SLURM's view of jobs, keyed ``"123"`` (single job) or ``"123_4"`` (array task).

    squeue for live jobs, then sacct (absent without accounting storage), then scontrol for
    finished jobs still in the controller's memory.
    """
    ids = sorted({str(j) for j in job_ids if j}, key=int)
    info: dict[str, JobInfo] = {}
    for jid in ids:
        proc = _run(runner, ["squeue", "-h", "-r", "-o", "%i|%T|%r", "-j", jid])
        if proc.returncode != 0:
            continue
        for line in proc.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) >= 2 and parts[0]:
                info[parts[0]] = JobInfo(parts[1].split()[0].upper(), parts[2] if len(parts) > 2 else "",
                                         source="squeue")
    if not ids:
        return info
    proc = _run(runner, ["sacct", "-n", "-P", "-X", "-o", "JobID,State,ExitCode", "-j", ",".join(ids)])
    if proc.returncode == 0:
        for line in proc.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) >= 2 and parts[0] and parts[0] not in info and "[" not in parts[0]:
                info[parts[0]] = JobInfo(parts[1].split()[0].upper(), exit_code=parts[2] if len(parts) > 2 else "",
                                         source="sacct")
    for jid in ids:
        proc = _run(runner, ["scontrol", "-o", "show", "job", jid])
        if proc.returncode != 0:
            continue
        for line in proc.stdout.splitlines():
            fields = dict(re.findall(r"(\w+)=(\S*)", line))
            state = fields.get("JobState", "").upper()
            if not state:
                continue
            keys = ([f"{fields['ArrayJobId']}_{t}" for t in _expand_task_ids(fields.get("ArrayTaskId", ""))]
                    if fields.get("ArrayJobId") else [fields.get("JobId", jid)])
            for key in keys:
                info.setdefault(key, JobInfo(state, fields.get("Reason", ""), fields.get("ExitCode", ""),
                                             "scontrol"))
    return info


# --------------------------------------------------------------------------- outputs on disk


def _file_ending(plan: dict[str, Any]) -> str:
    env, ds = plan["env"], plan["dataset"]
    for candidate in (Path(env["nnUNet_raw"]) / ds / "dataset.json",
                      Path(env["nnUNet_preprocessed"]) / ds / "dataset.json"):
        try:
            return json.loads(candidate.read_text(encoding="utf-8"))["file_ending"]
        except (OSError, ValueError, KeyError):
            continue
    return ".nii.gz"


def input_cases(folder: str, file_ending: str) -> list[str] | None:
    """Case ids of an nnU-Net input folder, sorted as ``nnUNetv2_predict`` sorts them (for -part_id)."""
    path = Path(folder)
    if not path.is_dir():
        return None
    pattern = re.compile(r"^(.+)_\d{4}" + re.escape(file_ending) + "$")
    return sorted({m.group(1) for f in os.listdir(path) if (m := pattern.match(f))})


def outputs_done(plan: dict[str, Any], stage: dict[str, Any], index: int | None,
                 _cache: dict | None = None) -> tuple[bool | None, str]:
    """(True/False, detail) from the files a task must leave, or (None, why) when not checkable."""
    cache = _cache if _cache is not None else {}
    kind = stage["kind"]
    if kind == "train":
        out = Path(stage["tasks"][index]["output"])
        if (out / "checkpoint_final.pth").is_file() and (out / "validation" / "summary.json").is_file():
            return True, ""
        ckpts = [c for c in ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")
                 if (out / c).is_file()]
        return False, (f"has {ckpts[0]} (will resume)" if ckpts else "no checkpoint yet")
    if kind in ("predict", "ensemble"):
        ending = cache.setdefault("ending", _file_ending(plan))
        src = stage["input"] if kind == "predict" else _predict_input(plan, stage)
        if src is None:
            return None, "input folder unknown"
        cases = cache.setdefault(("cases", src), input_cases(src, ending))
        if cases is None:
            return None, f"input folder {src} not readable"
        if kind == "predict":
            task = stage["tasks"][index]
            cases = cases[task["part"]::stage["num_parts"]]
            folder = Path(stage["output"]) / task["model"]
            suffixes = [ending] + ([".npz"] if stage["save_probabilities"] else [])
        else:
            folder, suffixes = Path(stage["output"]), [ending]
        missing = [c for c in cases for s in suffixes if not (folder / f"{c}{s}").is_file()]
        return (not missing), (f"{len(missing)} of {len(cases) * len(suffixes)} files missing" if missing else "")
    creates = stage.get("creates") or []
    if not creates:
        return None, "no 'creates' to check"
    missing = [c for c in creates if not Path(c).exists()]
    return (not missing), (f"missing {', '.join(missing)}" if missing else "")


def _predict_input(plan: dict[str, Any], ensemble: dict[str, Any]) -> str | None:
    for s in plan["stages"]:
        if s["name"] in ensemble["after"] and s["kind"] == "predict":
            return s["input"]
    return None


# --------------------------------------------------------------------------- status


def _latest_submissions(state: dict[str, Any]) -> dict[tuple[str, str], tuple[str, int | None]]:
    """(stage, task label) -> (job id, array index) of the most recent submission covering it."""
    latest: dict[tuple[str, str], tuple[str, int | None]] = {}
    for sub in state.get("submissions", []):
        for idx, label in (sub.get("tasks") or {}).items():
            latest[(sub["stage"], label)] = (sub["job_id"], None if idx == "" else int(idx))
    return latest


def grid_status(out_dir: str | os.PathLike, runner: Runner = subprocess.run,
                plan: dict[str, Any] | None = None, state: dict[str, Any] | None = None) -> list[TaskStatus]:
    """One :class:`TaskStatus` per task of every stage of the plan in ``out_dir``."""
    plan = plan if plan is not None else load_plan(out_dir)
    state = state if state is not None else load_state(out_dir)
    latest = _latest_submissions(state)
    jobs = query_jobs({job for job, _ in latest.values()}, runner) if latest else {}
    cache: dict = {}
    result = []
    for stage in plan["stages"]:
        labels = stage_labels(stage)
        for i, label in enumerate(labels):
            index = i if stage["tasks"] else None
            files, detail = outputs_done(plan, stage, index, cache)
            sub = latest.get((stage["name"], label))
            job_key = slurm = None
            log = None
            if sub is not None:
                job_id, sub_index = sub
                job_key = f"{job_id}_{sub_index}" if sub_index is not None else job_id
                info = jobs.get(job_key)
                slurm = info.state if info else None
                pattern = stage["log_pattern"]
                log = (pattern.replace("%A", job_id).replace("%a", str(sub_index)) if sub_index is not None
                       else pattern.replace("%j", job_id))
                if info and info.reason and info.reason not in ("None", "(null)"):
                    detail = f"{detail}; {info.reason}" if detail else info.reason
            if files is True:
                st = "done"
            elif slurm in ACTIVE_RUNNING:
                st = "running"
            elif slurm in ACTIVE_PENDING:
                reason = jobs[job_key].reason if job_key in jobs else ""
                st = "blocked" if "DependencyNeverSatisfied" in reason else "pending"
            elif slurm in FAILED:
                st = "failed"
            elif slurm == "COMPLETED":
                st = "done" if files is None else "failed"
                if files is False:
                    detail = f"completed but outputs incomplete ({detail})"
            elif sub is not None:
                st = "failed" if files is False else "unknown"
                detail = f"SLURM has no record any more{'; ' + detail if detail else ''}"
            else:
                st = "missing"
            result.append(TaskStatus(stage["name"], index, label, st, job_key, slurm, detail, log))
    return result


def active_jobs(statuses: list[TaskStatus], stage: str) -> list[str]:
    """Job ids (array ids, no task suffix) of a stage's pending or running tasks."""
    return sorted({s.job_id.split("_")[0] for s in statuses
                   if s.stage == stage and s.state in ("pending", "running") and s.job_id}, key=int)


def format_status(statuses: list[TaskStatus], out_dir: str | os.PathLike, experiment: str = "",
                  max_lines: int = 12) -> str:
    """Human summary: counts per stage, the unfinished tasks, and what to resubmit."""
    order = ["done", "running", "pending", "blocked", "failed", "missing", "unknown"]
    lines = []
    stages: dict[str, list[TaskStatus]] = {}
    for s in statuses:
        stages.setdefault(s.stage, []).append(s)
    width = max((len(n) for n in stages), default=5)
    lines.append(f"{'stage':<{width}}  " + "  ".join(f"{o:>7}" for o in order))
    for name, items in stages.items():
        counts = {o: sum(1 for s in items if s.state == o) for o in order}
        lines.append(f"{name:<{width}}  " + "  ".join(f"{counts[o]:>7}" for o in order))
    unfinished = [s for s in statuses if s.state != "done"]
    if unfinished:
        lines.append("")
        shown: dict[str, int] = {}
        for s in unfinished:
            shown[s.stage] = shown.get(s.stage, 0) + 1
            if shown[s.stage] > max_lines:
                continue
            where = f" [{s.job_id}{' ' + s.slurm_state if s.slurm_state else ''}]" if s.job_id else ""
            lines.append(f"{s.state:>8}  {s.stage}: {s.label}{where}{' - ' + s.detail if s.detail else ''}")
            if s.state in ("failed", "blocked") and s.log:
                lines.append(f"{'':>10}log: {s.log}")
        for stage, n in shown.items():
            if n > max_lines:
                lines.append(f"{'':>10}... {stage}: {n - max_lines} more unfinished tasks (--json lists all)")
    todo = [s for s in statuses if s.state in RESUBMIT]
    lines.append("")
    if not unfinished:
        lines.append("all tasks done")
    elif todo:
        exp = experiment or "EXPERIMENT"
        lines.append(f"to resubmit the {len(todo)} failed/missing tasks (finished ones are skipped, "
                     "interrupted trainings resume from their checkpoint):")
        lines.append(f"  nnunet-iph slurm submit {exp} -o {out_dir} --resubmit")
        plan_stages: dict[str, list[int | None]] = {}
        for s in todo:
            plan_stages.setdefault(s.stage, []).append(s.index)
        lines.append("or by hand (add --dependency=afterok:JOBID for stages that wait for others):")
        for name, idx in plan_stages.items():
            script = f"{Path(out_dir).resolve()}/{name}.sbatch"
            arr = f" --array={array_spec([i for i in idx if i is not None])}" if idx and idx[0] is not None else ""
            lines.append(f"  sbatch{arr} {script}")
    else:
        lines.append("nothing to resubmit: the remaining tasks are queued or running")
    return "\n".join(lines)


# --------------------------------------------------------------------------- submit


@dataclass
class Submission:
    stage: str
    job_id: str
    array: str | None
    dependency: list[str]
    tasks: dict[str, str]  # str(index) -> label ("" -> label for single jobs)


def submit(out_dir: str | os.PathLike, resubmit: bool = False, only: set[str] | None = None,
           runner: Runner = subprocess.run, dry_run: bool = False,
           echo: Callable[[str], None] = print, plan: dict[str, Any] | None = None) -> list[Submission]:
    """Submit the planned stages in dependency order, chaining job ids with ``afterok``.

    ``resubmit``: only tasks that are failed, missing, blocked or unknown; a stage with nothing to
    do is skipped, and its still-queued/running jobs become the dependencies of later stages.
    ``only``: restrict to these stage names. ``dry_run``: print the sbatch commands, submit nothing.
    ``plan``: the plan record when not (yet) written to ``out_dir`` (a dry run writes nothing).
    """
    out_dir = Path(out_dir).resolve()
    plan = plan if plan is not None else load_plan(out_dir)
    state = load_state(out_dir)
    names = [s["name"] for s in plan["stages"]]
    if only:
        unknown = set(only) - set(names)
        if unknown:
            raise ValueError(f"{out_dir / PLAN_FILE}: unknown stages {sorted(unknown)} (known: {names})")
    statuses = grid_status(out_dir, runner, plan, state) if state.get("submissions") else []
    if not resubmit and not dry_run:
        busy = sorted({s.job_id.split("_")[0] for s in statuses if s.state in ("pending", "running")
                       and (not only or s.stage in only)})
        if busy:
            raise ValueError(f"{out_dir / STATE_FILE}: jobs {', '.join(busy)} of this plan are still queued or "
                             "running; use --resubmit to add only failed/missing tasks, or scancel them first")
    by_stage: dict[str, list[TaskStatus]] = {}
    for s in statuses:
        by_stage.setdefault(s.stage, []).append(s)
    new_ids: dict[str, str] = {}
    done: list[Submission] = []
    for stage in plan["stages"]:
        name = stage["name"]
        if only and name not in only:
            continue
        labels = stage_labels(stage)
        if resubmit:
            st = by_stage.get(name)
            todo = ([i for i, s in enumerate(st) if s.state in RESUBMIT] if st is not None
                    else list(range(len(labels))))
            if not todo:
                echo(f"{name}: nothing to resubmit")
                continue
        else:
            todo = list(range(len(labels)))
        deps: list[str] = []
        for up in stage["after"]:
            if up in new_ids:
                deps.append(new_ids[up])
            else:
                deps += active_jobs(statuses, up)
        is_array = bool(stage["tasks"])
        array = None
        if is_array and len(todo) != len(labels):
            array = array_spec(todo, stage["resources"]["max_parallel"])
        tasks = {str(i): labels[i] for i in todo} if is_array else {"": labels[0]}
        if dry_run:
            job_id = f"<{name}>"
            cmd = ["sbatch", "--parsable", *([f"--array={array}"] if array else []),
                   *(["--dependency=afterok:" + ":".join(deps)] if deps else []), stage["script"]]
            echo(" ".join(cmd))
        else:
            job_id = sbatch(stage["script"], array, deps, runner)
            echo(f"{name}: submitted job {job_id}" + (f" (tasks {array})" if array else "")
                 + (f", after {':'.join(deps)}" if deps else ""))
        new_ids[name] = job_id
        sub = Submission(name, job_id, array, deps, tasks)
        done.append(sub)
        if not dry_run:
            state.setdefault("submissions", []).append(
                {**asdict(sub), "script": stage["script"],
                 "time": _dt.datetime.now().isoformat(timespec="seconds")})
            save_state(out_dir, state)  # after every sbatch: a later failure keeps what was submitted
    return done


# --------------------------------------------------------------------------- collect


def collect_rows(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """One row per training task of the plan: validation Dice from nnU-Net's summary.json."""
    plan = load_plan(out_dir)
    rows = []
    for stage in plan["stages"]:
        if stage["kind"] != "train":
            continue
        for t in stage["tasks"]:
            summary = Path(t["output"]) / "validation" / "summary.json"
            row = {"stage": stage["name"], "trainer": t["trainer"], "plans": t["plans"],
                   "configuration": t["configuration"], "fold": t["fold"], "done": summary.is_file(),
                   "n_cases": "", "dice": ""}
            if summary.is_file():
                data = json.loads(summary.read_text(encoding="utf-8"))
                row["n_cases"] = len(data.get("metric_per_case", []))
                dice = data.get("foreground_mean", {}).get("Dice")
                row["dice"] = "" if dice is None else f"{dice:.6g}"
            rows.append(row)
    return rows
