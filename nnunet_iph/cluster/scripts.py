"""sbatch scripts for an :class:`~nnunet_iph.cluster.experiment.Experiment`: pure text, no SLURM needed.

Why generated bash rather than a Python job runner: every array task is a plain, readable
``nnUNetv2_train`` / ``nnUNetv2_predict`` call that a cluster admin can inspect and that runs with
``bash SCRIPT TASK_ID`` outside SLURM too. The environment is exported explicitly because batch
jobs do not necessarily inherit the submitting shell's (``--export=NONE`` sites, requeues).

Resume contract of a training task: skip when ``checkpoint_final.pth`` and
``validation/summary.json`` exist; otherwise pass ``--c`` when any nnU-Net checkpoint exists
(final: validation only; latest/best: continue training from that epoch), else start fresh.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nnunet_iph.cluster.experiment import Experiment, PredictTask, Stage, TrainTask

SCRIPT_SUFFIX = ".sbatch"
PLAN_FILE = "plan.json"
CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")


def q(value: Any) -> str:
    return shlex.quote(str(value))


def job_name(exp: Experiment, stage: Stage) -> str:
    return f"{exp.name}-{stage.name}"


def script_path(out_dir: str | os.PathLike, stage: Stage) -> Path:
    return Path(out_dir) / f"{stage.name}{SCRIPT_SUFFIX}"


def log_pattern(exp: Experiment, stage: Stage, out_dir: str | os.PathLike) -> str:
    """SLURM ``--output`` pattern (``slurm status`` fills in the job id and array index of a task)."""
    suffix = "%A_%a" if stage.is_array else "%j"
    return f"{Path(out_dir).resolve()}/logs/{job_name(exp, stage)}_{suffix}.out"


def array_spec(indices: list[int], max_parallel: int = 0) -> str:
    """Compact ``--array`` value: ``0-3,7,9-10%4``."""
    if not indices:
        raise ValueError("an array needs at least one task")
    idx = sorted(set(indices))
    parts, start, prev = [], idx[0], idx[0]
    for i in idx[1:] + [None]:  # type: ignore[operator]
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    spec = ",".join(parts)
    return f"{spec}%{max_parallel}" if max_parallel else spec


def sbatch_directives(exp: Experiment, stage: Stage, out_dir: str | os.PathLike) -> list[str]:
    r = stage.resources
    lines = [f"--job-name={job_name(exp, stage)}"]
    if stage.is_array:
        lines.append(f"--array={array_spec(list(range(len(stage.tasks))), r.max_parallel)}")
    lines += [f"--output={log_pattern(exp, stage, out_dir)}", "--open-mode=append",
              f"--chdir={Path(out_dir).resolve()}", "--nodes=1", "--ntasks=1",
              f"--cpus-per-task={r.cpus_per_task}"]
    if r.mem:
        lines.append(f"--mem={r.mem}")
    if r.time:
        lines.append(f"--time={r.time}")
    for key, flag in (("partition", "partition"), ("account", "account"), ("qos", "qos"),
                      ("constraint", "constraint")):
        value = getattr(r, key)
        if value:
            lines.append(f"--{flag}={value}")
    if r.gres:
        lines.append(f"--gres={r.gres}")
    elif r.gpus:
        lines.append(f"--gpus={r.gpus}")
    if stage.kind == "train":
        lines.append("--requeue")  # preempted / node-failed tasks come back and resume with --c
    lines.append("--kill-on-invalid-dep=yes")  # a failed upstream cancels instead of pending forever
    lines += list(r.extra)
    return lines


def _env_block(exp: Experiment, stage: Stage) -> list[str]:
    cpus = stage.resources.cpus_per_task
    per_gpu = max(1, stage.num_gpus) if stage.kind == "train" else 1
    lines = [f"export {k}={q(v)}" for k, v in exp.env.items()]
    lines.append(f"CPUS=${{SLURM_CPUS_PER_TASK:-{cpus}}}")
    if per_gpu > 1:
        lines += ["# nnU-Net's data-augmentation workers are per GPU: split the job's CPUs between the GPUs",
                  f"export nnUNet_n_proc_DA=$(( CPUS / {per_gpu} > 0 ? CPUS / {per_gpu} : 1 ))"]
    else:
        lines.append("export nnUNet_n_proc_DA=$CPUS")
    lines += [
        "export nnUNet_def_n_proc=$CPUS",
        "export OMP_NUM_THREADS=$CPUS",
        "export PYTHONUNBUFFERED=1",
        f"export PATH={q(exp.bin_dir)}:$PATH",
    ]
    return lines


def _bin(exp: Experiment, tool: str) -> str:
    return q(f"{exp.bin_dir}/{tool}")


def _task_table(rows: list[str]) -> list[str]:
    return ["TASKS=("] + [f"  [{i}]={q(row)}" for i, row in enumerate(rows)] + [")"]


def _task_select(fields: str) -> list[str]:
    return [
        'TASK_ID=${1:-${SLURM_ARRAY_TASK_ID:?run as an array job, or pass a task index: bash "$0" INDEX}}',
        'if [[ -z ${TASKS[$TASK_ID]+x} ]]; then echo "nnunet-iph: no task $TASK_ID in this script" >&2; exit 2; fi',
        f'read -r {fields} <<< "${{TASKS[$TASK_ID]}}"',
    ]


def _train_body(exp: Experiment, stage: Stage) -> list[str]:
    rows = [f"{t.trainer} {t.plans} {t.configuration} {t.fold}" for t in stage.tasks]
    results = f"{exp.results}/{exp.dataset}"
    cmd = [_bin(exp, "nnUNetv2_train"), q(exp.dataset_arg), '"$CONFIG"', '"$FOLD"', "-tr", '"$TRAINER"',
           "-p", '"$PLANS"', "-device", q(exp.device)]
    if stage.num_gpus > 1:
        cmd += ["-num_gpus", str(stage.num_gpus)]
    if stage.npz:
        cmd.append("--npz")
    cmd += [q(a) for a in stage.args]
    return [
        "# index -> trainer plans configuration fold",
        *_task_table(rows),
        *_task_select("TRAINER PLANS CONFIG FOLD"),
        f'OUT={q(results)}/"${{TRAINER}}__${{PLANS}}__${{CONFIG}}/fold_${{FOLD}}"',
        'echo "nnunet-iph: task $TASK_ID: $TRAINER $PLANS $CONFIG fold $FOLD on $(hostname) -> $OUT"',
        'if [[ -f $OUT/checkpoint_final.pth && -f $OUT/validation/summary.json ]]; then',
        '  echo "nnunet-iph: already finished ($OUT/checkpoint_final.pth), nothing to do"',
        "  exit 0",
        "fi",
        'RESUME=""',
        f"for CKPT in {' '.join(CHECKPOINTS)}; do",
        '  if [[ -f $OUT/$CKPT ]]; then RESUME="--c"; echo "nnunet-iph: resuming from $OUT/$CKPT"; break; fi',
        "done",
        "exec " + " ".join(cmd) + " $RESUME",
    ]


def _predict_body(exp: Experiment, stage: Stage) -> list[str]:
    rows = [f"{t.trainer} {t.plans} {t.configuration} {t.part}" for t in stage.tasks]
    cmd = [_bin(exp, "nnUNetv2_predict"), "-i", q(stage.input), "-o", '"$OUT"', "-d", q(exp.dataset_arg),
           "-tr", '"$TRAINER"', "-p", '"$PLANS"', "-c", '"$CONFIG"', "-f", *[q(f) for f in stage.folds],
           "-num_parts", str(stage.num_parts), "-part_id", '"$PART"', "-device", q(exp.device),
           "--continue_prediction"]
    if stage.save_probabilities:
        cmd.append("--save_probabilities")
    if stage.prev_output:
        cmd += ["-prev_stage_predictions",
                f'{q(stage.prev_output)}/"${{TRAINER}}__${{PLANS}}__"{q(stage.prev_configuration)}']
    cmd += [q(a) for a in stage.args]
    return [
        "# index -> trainer plans configuration part (of -num_parts)",
        *_task_table(rows),
        *_task_select("TRAINER PLANS CONFIG PART"),
        f'OUT={q(stage.output)}/"${{TRAINER}}__${{PLANS}}__${{CONFIG}}"',
        'mkdir -p "$OUT"',
        f'echo "nnunet-iph: task $TASK_ID: $TRAINER $PLANS $CONFIG part $PART/{stage.num_parts} on $(hostname) -> $OUT"',
        "exec " + " ".join(cmd),
    ]


def _ensemble_body(exp: Experiment, stage: Stage) -> list[str]:
    cmd = [_bin(exp, "nnUNetv2_ensemble"), "-i", *[q(i) for i in stage.inputs], "-o", q(stage.output),
           "-np", '"$CPUS"']
    return [f'echo "nnunet-iph: ensembling {len(stage.inputs)} models -> {stage.output}"', "exec " + " ".join(cmd)]


def _job_body(exp: Experiment, stage: Stage) -> list[str]:
    return ['echo "nnunet-iph: job ' + stage.name + ' on $(hostname)"', stage.command or "true"]


def render_script(exp: Experiment, stage: Stage, out_dir: str | os.PathLike) -> str:
    """The complete sbatch script of one stage."""
    n = len(stage.tasks)
    what = {"train": f"{n} nnUNetv2_train runs", "predict": f"{n} nnUNetv2_predict parts",
            "ensemble": "nnUNetv2_ensemble", "job": "a command"}[stage.kind]
    head = ["#!/bin/bash",
            f"# nnunet-iph slurm: stage {stage.name!r} ({stage.kind}: {what})"
            + (f" of {exp.source}" if exp.source else "")]
    if stage.after:
        head.append(f"# waits for: {', '.join(stage.after)} (sbatch --dependency=afterok, set by submit)")
    head += [f"#SBATCH {d}" for d in sbatch_directives(exp, stage, out_dir)]
    body = {"train": _train_body, "predict": _predict_body, "ensemble": _ensemble_body,
            "job": _job_body}[stage.kind](exp, stage)
    # setup lines (module load, conda activate) often read unset variables: nounset only after them
    return "\n".join([*head, "set -eo pipefail", *exp.setup, "set -u", "", *_env_block(exp, stage), "",
                      *body]) + "\n"


def plan_record(exp: Experiment, out_dir: str | os.PathLike) -> dict[str, Any]:
    """JSON-able description of the plan: ``submit`` and ``status`` work from this alone."""
    out_dir = Path(out_dir).resolve()
    stages = []
    for s in exp.stages:
        rec = asdict(s)
        rec["resources"] = asdict(s.resources)
        rec["script"] = str(script_path(out_dir, s))
        rec["job_name"] = job_name(exp, s)
        rec["log_pattern"] = log_pattern(exp, s, out_dir)
        rec["tasks"] = [{"kind": type(t).__name__, **asdict(t), "model": t.model} for t in s.tasks]
        if s.kind == "train":
            for rt, t in zip(rec["tasks"], s.tasks):
                rt["output"] = exp.train_output(t)
        stages.append(rec)
    return {"experiment": exp.source, "name": exp.name, "dataset": exp.dataset, "device": exp.device,
            "bin_dir": exp.bin_dir, "env": exp.env, "out_dir": str(out_dir), "stages": stages}


def write_plan(exp: Experiment, out_dir: str | os.PathLike) -> list[Path]:
    """Write every stage's script, ``plan.json`` and the ``logs/`` folder SLURM writes into."""
    from nnunet_iph.imageio import write_json, write_text  # SimpleITK import: only when writing

    out_dir = Path(out_dir).resolve()
    (out_dir / "logs").mkdir(parents=True, exist_ok=True)
    written = []
    for stage in exp.stages:
        path = write_text(render_script(exp, stage, out_dir), script_path(out_dir, stage))
        path.chmod(0o755)
        written.append(path)
    written.append(write_json(plan_record(exp, out_dir), out_dir / PLAN_FILE))
    return written


__all__ = ["render_script", "write_plan", "plan_record", "array_spec", "sbatch_directives", "script_path",
           "TrainTask", "PredictTask"]
