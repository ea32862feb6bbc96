"""GPU protocol: prepare here, train as SLURM array jobs through ``nnunet-iph slurm``, analyse afterwards.

Why split this way: the full grid (5 folds x models x planes + cascade at nnU-Net's own plans) is
weeks of CPU time but one `sbatch` per stage on a cluster. The benchmark prepares the data and
plans (convert, ``nnunet-iph plan``: plane plans + cascade, preprocessed), writes the cluster
scripts from the experiment file, optionally submits them, and - once every training has its
final checkpoint and validation - ensembles and analyses exactly like the CPU protocol. The
experiment's last job calls this command again for that final part.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nnunet_iph.benchmarking.workspace import training_done
from nnunet_iph.benchmarking.steps import Step
from nnunet_iph.planning import PLANES

if TYPE_CHECKING:
    from nnunet_iph.benchmarking.ctich import CTICHBenchmark
    from nnunet_iph.cluster.experiment import Experiment


def check_experiment_covers(bench: "CTICHBenchmark", exp: "Experiment") -> None:
    """Every training run the results table needs must be a task of the experiment file."""
    tasks = {(t.trainer, t.plans, t.configuration, str(t.fold)) for s in exp.stages if s.kind == "train"
             for t in s.tasks}
    need = {(r.trainer, r.plans, r.configuration, str(r.fold)) for m in bench.protocol.models
            for f in bench.protocol.eval_folds for r in bench.protocol.member_runs(m, f)}
    missing = sorted(need - tasks)
    if missing:
        shown = ", ".join(f"{t}__{p}__{c} fold {f}" for t, p, c, f in missing[:6])
        raise ValueError(f"{exp.source}: the experiment does not train {len(missing)} run(s) the protocol "
                         f"{bench.protocol.source} reports, e.g. {shown}")
    if exp.dataset != bench.protocol.dataset:
        raise ValueError(f"{exp.source}: dataset {exp.dataset} differs from the protocol's {bench.protocol.dataset}")


def load_gpu_experiment(bench: "CTICHBenchmark") -> "Experiment":
    from nnunet_iph.cluster.experiment import load_experiment

    exp = load_experiment(bench.protocol.experiment, out_dir=bench.ws.slurm)
    check_experiment_covers(bench, exp)
    return exp


def step_plan_all(bench: "CTICHBenchmark") -> Step:
    """``nnunet-iph plan -d N``: nnU-Net's plans, the three plane plans and the cascade, preprocessed."""
    prep = bench.preprocessed
    wanted = [prep / "nnUNetPlans.json", prep / "nnUNetPlans_cascade.json",
              *(prep / f"nnUNetPlans_{p}.json" for p in PLANES)]

    def run() -> dict:
        log = bench._run_logged(["nnunet-iph", "plan", "-d", str(bench.protocol.dataset_id), "--fine", "3d",
                                 "-np", str(bench.protocol.num_processes)], "plan_planes_cascade")
        return {"log": str(log)}

    return Step("plan + preprocess (nnunet-iph plan: planes + cascade)", run, lambda: all(p.is_file() for p in wanted),
                wanted)


def step_slurm_plan(bench: "CTICHBenchmark") -> Step:
    from nnunet_iph.cluster.scripts import PLAN_FILE

    def run() -> dict:
        from nnunet_iph.cluster.scripts import write_plan

        exp = load_gpu_experiment(bench)
        written = write_plan(exp, bench.ws.slurm)
        return {"scripts": [str(p) for p in written]}

    return Step("write SLURM scripts (nnunet-iph slurm plan)", run, lambda: (bench.ws.slurm / PLAN_FILE).is_file(),
                [bench.ws.slurm / PLAN_FILE])


def trainings_finished(bench: "CTICHBenchmark") -> bool:
    return all(training_done(bench.ws.fold_dir(bench.protocol.dataset, r)) for r in bench.protocol.runs())


def gpu_steps(bench: "CTICHBenchmark", only_prepare: bool = False) -> list[Step]:
    """Preparation steps; plus ensembles and analysis once the cluster has trained every run."""
    steps = [bench.step_subset(), bench.step_convert(), step_plan_all(bench), step_slurm_plan(bench)]
    if only_prepare or not trainings_finished(bench):
        return steps
    steps += [bench.step_ensemble(m) for m in bench.protocol.models if m.is_ensemble]
    steps.append(bench.step_analyze())
    return steps
