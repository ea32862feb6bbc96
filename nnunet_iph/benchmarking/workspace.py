"""Layout of a benchmark work folder: where each step reads and writes, and when a training is finished.

Why a module of its own: the pipeline (:mod:`.ctich`), the GPU protocol (:mod:`.gpu`) and the
results writer (:mod:`.report`) all need these paths and rules; with them here, none of those
modules has to import another to find a file (no import cycles).

Work folder ``W`` (outside the repository)::

    W/source/            the cohort subset: links into the release + filtered slice table
    W/nnunet/            nnUNet_raw, nnUNet_preprocessed, nnUNet_results
    W/logs/              one log per step (training logs: one per attempt)
    W/state.json         steps, attempts, wall times
    W/slurm/             gpu protocol: the sbatch scripts of ``nnunet-iph slurm``
    W/results/           per_case.csv, results_table.md/csv, paired_vs_baseline.csv, README.md,
                         protocol.toml, run.json, analysis/ (report, tables, figures)
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from nnunet_iph.cluster.experiment import TrainTask

CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")


class Workspace:
    """The folders of one work folder ``root`` (see the module docstring)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.source, self.nnunet, self.logs, self.slurm, self.results = (
            self.root / name for name in ("source", "nnunet", "logs", "slurm", "results"))
        self.state = self.root / "state.json"

    def raw(self, dataset: str) -> Path:
        return self.nnunet / "nnUNet_raw" / dataset

    def preprocessed(self, dataset: str) -> Path:
        return self.nnunet / "nnUNet_preprocessed" / dataset

    def results_dataset(self, dataset: str) -> Path:
        return self.nnunet / "nnUNet_results" / dataset

    def fold_dir(self, dataset: str, run: TrainTask) -> Path:
        """nnU-Net's output folder of one training run."""
        return self.results_dataset(dataset) / run.model / f"fold_{run.fold}"


def check_workdir(workdir: str | os.PathLike, repo: Path | None = None) -> Workspace:
    """The work folder, refused inside the repository (data and results never go into it)."""
    root = Path(workdir).expanduser().resolve()
    repo = (repo or Path(__file__).resolve().parents[2]).resolve()
    if (repo / "pyproject.toml").is_file() and (root == repo or repo in root.parents):
        raise ValueError(f"workdir {root} is inside the repository {repo}; use a folder outside it "
                         "(the data must not be copied into the repository)")
    return Workspace(root)


def training_done(folder: Path) -> bool:
    """Finished = the cluster scripts' rule: final checkpoint and the validation summary."""
    return (folder / "checkpoint_final.pth").is_file() and (folder / "validation" / "summary.json").is_file()


def resume_flag(folder: Path) -> list[str]:
    """``--c`` when any checkpoint exists (final: validation only; latest/best: training continues)."""
    return ["--c"] if any((folder / ckpt).is_file() for ckpt in CHECKPOINTS) else []


def attempt_log(logs: Path, stem: str) -> Path:
    """``logs/<stem>.log``, or ``<stem>.attempt2.log`` ... when earlier attempts left theirs."""
    path = logs / f"{stem}.log"
    n = 1
    while path.exists():
        n += 1
        path = logs / f"{stem}.attempt{n}.log"
    return path


def copy_protocol(source: Path | None, dest: Path) -> None:
    """The protocol file next to the numbers it produced (``results/protocol.toml``)."""
    if source and source.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
