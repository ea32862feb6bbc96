"""The benchmark's results folder: table, paired comparisons, run record and a README of the protocol.

Why a README per run: numbers without the exact protocol (cases, folds, spacing, patch, batch,
iterations, threads), the versions and the wall times cannot be checked or reproduced; they are
written next to the numbers, from the same run.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from nnunet_iph.benchmarking.runtime import machine_info, training_env
from nnunet_iph.benchmarking.workspace import copy_protocol
from nnunet_iph.imageio import write_csv, write_json, write_text

if TYPE_CHECKING:
    from nnunet_iph.benchmarking.ctich import CTICHBenchmark
    from nnunet_iph.benchmarking.steps import StepRunner


def _fmt_s(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"


def training_rows(bench: "CTICHBenchmark") -> list[dict[str, Any]]:
    from nnunet_iph.benchmarking.training_logs import fold_training_summary

    p = bench.protocol
    rows = []
    for run in p.runs():
        info = fold_training_summary(bench.ws.fold_dir(p.dataset, run), p.iterations)
        rows.append({"model_id": run.model, "fold": run.fold, **{k: v for k, v in info.items()}})
    return rows


def step_times(runner: "StepRunner") -> list[dict[str, Any]]:
    """Per step: status ('this step' for the report being written), attempts, wall time of all attempts."""
    return [{"step": name, "status": "this step" if rec.get("status") == "running" else rec.get("status"),
             "attempts": len(rec.get("attempts", [])),
             "wall_s": round(sum(a.get("wall_s", 0.0) for a in rec.get("attempts", [])), 1)}
            for name, rec in runner.state["steps"].items()]


def write_results(bench: "CTICHBenchmark", runner: "StepRunner") -> dict[str, Any]:
    import pandas as pd

    from nnunet_iph.benchmarking.results import headline_markdown, headline_table
    from nnunet_iph.environment import package_versions

    p, ws = bench.protocol, bench.ws
    out = ws.results
    out.mkdir(parents=True, exist_ok=True)
    copy_protocol(p.source, out / "protocol.toml")
    table = pd.read_csv(out / "per_case.csv", dtype={"case": str})
    models = [m.name for m in p.models]
    summary, paired = headline_table(table, models, p.baseline.name, seed=p.seed)
    write_csv(summary, out / "results_table.csv")
    write_csv(paired, out / "paired_vs_baseline.csv")
    md = headline_markdown(summary, paired)
    write_text(md, out / "results_table.md")

    times = step_times(runner)
    trainings = training_rows(bench)
    selection = json.loads((ws.source / "selection.json").read_text(encoding="utf-8"))
    splits = json.loads((bench.preprocessed / "splits_final.json").read_text(encoding="utf-8"))
    configs = {}
    for plans_id, path in bench.plans_files().items():
        if path.is_file() and p.plan is not None:
            cfgs = json.loads(path.read_text(encoding="utf-8"))["configurations"]
            c = cfgs.get(p.plan.configuration, {})
            configs[plans_id] = {"spacing": c.get("spacing"), "patch_size": c.get("patch_size"),
                              "batch_size": c.get("batch_size"),
                              "features_per_stage": c.get("architecture", {}).get("arch_kwargs", {}).get(
                                  "features_per_stage"),
                              "arch_kwargs_extra": p.plan.arch_kwargs}
    total_s = sum(t["wall_s"] for t in times)
    record = {"protocol": p.raw, "protocol_file": str(p.source), "dataset": p.dataset, "selection": selection,
              "eval_folds": list(p.eval_folds), "tuning_fold": p.tuning_fold,
              "validation_cases": {str(f): splits[f]["val"] for f in p.eval_folds},
              "configurations": configs, "environment": {k: v for k, v in training_env(p, bench.env).items()
                                                         if not k.startswith("nnUNet_") or k in (
                                                             "nnUNet_n_proc_DA", "nnUNet_def_n_proc",
                                                             "nnUNet_compile")},
              "versions": package_versions(), "machine": machine_info(), "steps": times,
              "total_wall_s": round(total_s, 1), "trainings": trainings, "runs": runner.state.get("runs", [])}
    base = summary[summary["baseline"]].iloc[0]
    record["baseline_dice_positive"] = base["dice_mean"]
    write_json(record, out / "run.json")
    write_text(readme(bench, md, paired, record), out / "README.md")
    return {"total_wall_s": round(total_s, 1), "models": models}


def readme(bench: "CTICHBenchmark", table_md: str, paired, record: dict[str, Any]) -> str:
    p = bench.protocol
    sel = record["selection"]
    lines = [f"# PhysioNet CT-ICH benchmark: {p.name}", ""]
    if p.description:
        lines += [p.description.strip(), ""]
    lines += ["## Results", "",
              f"Fold(s) {', '.join(map(str, p.eval_folds))} of {p.folds} patient-level folds; mean ± SD over the "
              "hemorrhage-positive validation cases (negatives: scans with any false-positive voxel). "
              "Paired comparisons (same cases) against the baseline "
              f"**{p.baseline.name}**; p-values Holm-adjusted over the {len(p.models) - 1} comparisons in "
              "parentheses. Small n: read the confidence intervals, not only the p-values. HD95 of a missed "
              "lesion (empty prediction) is the image diagonal (see docs/analysis-metrics.md).", "", table_md, "",
              f"Baseline mean Dice over the positive cases: {record['baseline_dice_positive']:.3f} (the protocol asks "
              f"for >= 0.4 so that the comparison says something: "
              f"{'met' if record['baseline_dice_positive'] >= 0.4 else 'NOT met'}).", ""]
    other = paired[paired["metric"] != "dice"]
    if len(other):
        lines += ["Other paired comparisons (model − baseline, positive cases):", "",
                  "| model | metric | mean difference [95% CI] | p Wilcoxon | p t |", "|---|---|---|---|---|"]
        for _, r in other.iterrows():
            lines.append(f"| {r['model']} | {r['metric']} | {r['mean_diff']:+.2f} [{r['ci_low']:+.2f}, "
                         f"{r['ci_high']:+.2f}] | {r['p_wilcoxon']:.3g} | {r['p_t']:.3g} |")
        lines.append("")
    lines += ["Full analysis (OLS, ANOVA, mixed model, volume agreement, figures): `analysis/report.md`. "
              "Per-case metrics: `per_case.csv`.", "", "## Protocol", "",
              f"- Data: {sel['n_positive']} hemorrhage-positive + {sel['n_negative']} hemorrhage-free scans "
              f"(negatives drawn with seed {sel['seed']}: {', '.join(sel['negative'])}); "
              f"dataset `{p.dataset}`, converted with `nnunet-iph convert physionet`.",
              f"- Folds: {p.folds} patient-level folds (seed {p.seed}); reported: fold(s) "
              f"{', '.join(map(str, p.eval_folds))} (validation cases "
              + "; ".join(f"fold {f}: {', '.join(c)}" for f, c in record["validation_cases"].items()) + ")."]
    if p.tuning_fold is not None:
        lines.append(f"- Settings were chosen on fold {p.tuning_fold}, never on the reported fold(s).")
    if p.epochs:
        lines.append(f"- Schedule: {p.epochs} epochs x {p.iterations} iterations = {p.epochs * p.iterations} "
                     f"training iterations for every model (`{p.scheduled('<Trainer>')}`), "
                     "nnU-Net's optimiser, poly learning rate, augmentation and final validation "
                     + ("(with its default test-time mirroring)." if p.tta else "(without test-time mirroring)."))
    for plans_id, c in record["configurations"].items():
        lines.append(f"- `{p.plan.configuration}` of `{plans_id}`: spacing {c['spacing']} mm, patch "
                     f"{c['patch_size']}, batch {c['batch_size']}, PlainConvUNet features {c['features_per_stage']}; "
                     f"architecture trainers: same data/patch/batch, plus {c['arch_kwargs_extra']}.")
    lines += ["- Models:"]
    for m in p.models:
        runs = p.member_runs(m, p.eval_folds[0])
        what = " + ".join(f"`{r.model}`" for r in runs)
        lines.append(f"  - **{m.name}**{' (baseline)' if m.baseline else ''}: "
                     f"{'2.5D ensemble (mean softmax) of ' if m.is_ensemble else ''}{what}")
    lines += ["", "## Run", "", f"- Total wall time of all steps: {_fmt_s(record['total_wall_s'])} "
              f"(machine: {record['machine'].get('cpu_count')} CPUs, load average at the report "
              f"{record['machine'].get('load_average')}).",
              "- Environment: " + ", ".join(f"`{k}={v}`" for k, v in record["environment"].items()
                                           if k not in ("nnUNet_extTrainer", "PYTHONUNBUFFERED")) + ".",
              "- Versions: " + ", ".join(f"{k} {v}" for k, v in record["versions"].items() if v) + ".",
              f"- Seeds: case selection and folds {p.seed}; bootstrap {p.seed}; " + (
                  f"training {p.training_seed} (+ fold; initialisation, sampling and augmentation, the latter in "
                  "the training process), so a re-run on the same machine and versions repeats the numbers."
                  if p.training_seed is not None else
                  "training unseeded (nnU-Net's default: random initialisation, sampling and augmentation in "
                  "worker processes), so a re-run gives somewhat different numbers."), "",
              "| step | status | attempts | wall time |", "|---|---|---:|---:|"]
    for t in record["steps"]:
        lines.append(f"| {t['step']} | {t['status']} | {t['attempts']} | {_fmt_s(t['wall_s'])} |")
    lines += ["", "| training | epochs logged | median epoch (s) | s / iteration | nnU-Net validation Dice |",
              "|---|---:|---:|---:|---:|"]
    for t in record["trainings"]:
        dice = t.get("validation_dice_nnunet")
        lines.append(f"| `{t['model_id']}` fold {t['fold']} | {t.get('epochs_logged', 0)} | "
                     f"{t.get('median_epoch_s', 'n/a')} | {t.get('s_per_iteration', 'n/a')} | "
                     f"{'n/a' if dice is None else f'{dice:.3f}'} |")
    lines += ["", "s / iteration = median epoch time / training iterations per epoch (the epoch also runs "
              "its validation iterations). Timings on a shared machine are inflated by the other jobs.", ""]
    return "\n".join(lines)
