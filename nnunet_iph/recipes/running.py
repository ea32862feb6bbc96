"""``nnunet-iph recipe --run``: the recipe's whole experiment on this machine, stage after stage.

Why through the SLURM scripts: ``nnunet-iph slurm plan`` already writes one readable script per
stage whose tasks run with ``bash SCRIPT INDEX`` outside SLURM and carry the resume contract
(finished trainings are skipped, interrupted ones continue with ``--c``). Running them in
dependency order locally gives the same commands as the cluster, and a rerun resumes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from nnunet_iph.recipes.outputs import experiment, to_toml
from nnunet_iph.recipes.resolve import Resolved

LOCAL_DIR = "local"


def local_resources(device: str, cpus: int) -> dict[str, Any]:
    return {"gpus": 1 if device == "cuda" else 0, "cpus_per_task": cpus}


def steps(exp) -> list[tuple[Any, int | None, str]]:
    """``(stage, task index or None, description)`` in the order they run."""
    out = []
    for stage in exp.stages:
        if stage.is_array:
            out += [(stage, i, f"{stage.kind} {task.model} " + (f"fold {task.fold}" if stage.kind == "train"
                                                                 else f"part {task.part}"))
                    for i, task in enumerate(stage.tasks)]
        else:
            out.append((stage, None, f"{stage.kind} {stage.name}"))
    return out


def plan_local(r: Resolved, device: str, cpus: int, write: bool):
    """The recipe's experiment for this machine (``-o DIR/local``); with ``write`` its scripts too."""
    from nnunet_iph.cluster.experiment import build_experiment, load_experiment
    from nnunet_iph.cluster.scripts import write_plan

    folder = r.out_dir / LOCAL_DIR
    raw = experiment(r, device, local_resources(device, cpus))
    if not write:
        return build_experiment(raw, source=None, out_dir=folder)
    from nnunet_iph.imageio import write_text

    folder.mkdir(parents=True, exist_ok=True)
    path = write_text(to_toml(raw, f"nnunet-iph recipe {r.recipe.name} --run: the experiment on this machine"),
                      folder / "experiment.toml")
    exp = load_experiment(path, out_dir=folder)
    write_plan(exp, folder)
    return exp


def run_locally(r: Resolved, device: str, cpus: int) -> int:
    """Run every task in order; stop at the first failure naming its log (a rerun resumes)."""
    from nnunet_iph.cluster.scripts import script_path

    exp = plan_local(r, device, cpus, write=True)
    folder = r.out_dir / LOCAL_DIR
    todo = steps(exp)
    for n, (stage, index, what) in enumerate(todo, 1):
        log = folder / "logs" / (f"{stage.name}_{index}.log" if index is not None else f"{stage.name}.log")
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"[{n}/{len(todo)}] {what}  (log: {log})", flush=True)
        cmd = ["bash", str(script_path(folder, stage)), *([str(index)] if index is not None else [])]
        with open(log, "a", encoding="utf-8") as fh:
            rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=os.environ.copy()).returncode
        if rc != 0:
            tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(True)[-5:])
            print(tail, file=sys.stderr, end="")
            raise ValueError(f"{what} failed (exit {rc}); log: {log}. Fix it and rerun with --run: finished "
                             "tasks are skipped, interrupted trainings resume from their checkpoint")
    return len(todo)


def describe(r: Resolved, device: str, cpus: int) -> list[str]:
    """The commands ``--run`` would execute, one line each (``--run --dry-run``; the plans must exist)."""
    from nnunet_iph.cluster.scripts import script_path

    exp = plan_local(r, device, cpus, write=False)
    folder = r.out_dir / LOCAL_DIR
    out = []
    for stage, index, what in steps(exp):
        args = f" {index}" if index is not None else ""
        detail = ""
        if stage.kind == "train":
            task = stage.tasks[index]
            detail = (f"  # nnUNetv2_train {exp.dataset} {task.configuration} {task.fold} -tr {task.trainer} "
                      f"-p {task.plans} -device {device} --npz")
        elif stage.kind == "job":
            detail = f"  # {stage.command}"
        else:
            detail = f"  # {what}"
        out.append(f"bash {script_path(folder, stage)}{args}{detail}")
    return out
