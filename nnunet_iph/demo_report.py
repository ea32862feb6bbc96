"""The demo's Markdown report: test-set Dice per model, per case, overlays, settings, versions."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from nnunet_iph.environment import package_versions
from nnunet_iph.imageio import write_text

if TYPE_CHECKING:
    from nnunet_iph.demo import DemoModel, DemoSettings


def _dice(value: float) -> str:
    return "empty, correct" if value != value else f"{value:.3f}"  # NaN: empty reference and prediction


def write_report(workdir: Path, raw: Path, predictions: Path, settings: DemoSettings, models: list[DemoModel],
                 results: Path, timings: dict[str, float]) -> Path:
    import SimpleITK as sitk

    from nnunet_iph.analysis.figures import overlay_png

    def read(path: Path):
        return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))

    rows, per_case = [], {}
    for i, m in enumerate(models):
        summary = json.loads((predictions / f"model{i}" / "summary.json").read_text(encoding="utf-8"))
        per_case[m.label] = {Path(c["reference_file"]).name.removesuffix(".nii.gz"): c["metrics"]["1"]["Dice"]
                             for c in summary["metric_per_case"]}
        train_s = sum(timings[t.step_name] for t in m.trainings)
        rows.append(f"| `{m.label}` | {m.kind} | {len(m.trainings)} | {summary['foreground_mean']['Dice']:.3f} | "
                    f"{train_s:.0f} | {timings[f'predict {m.label}']:.0f} |")
    cases = sorted(next(iter(per_case.values())))
    volumes = {c: int(read(raw / "labelsTs" / f"{c}.nii.gz").sum()) for c in cases}
    shown = max(volumes, key=volumes.get)  # the largest reference hemorrhage, shown for every model
    ct, ref = read(raw / "imagesTs" / f"{shown}_0000.nii.gz"), read(raw / "labelsTs" / f"{shown}.nii.gz")
    images = [overlay_png(ct, ref, read(predictions / f"model{i}" / f"{shown}.nii.gz"),
                          workdir / "report_figures" / f"overlay_model{i}.png",
                          title=f"{m.label}: {shown} (Dice {per_case[m.label][shown]:.3f})")
              for i, m in enumerate(models)]

    showcase = any(m.kind.startswith("showcase") for m in models)
    lines = ["# nnunet-iph demo report", "",
             f"Synthetic multi-site head-CT phantom: {settings.subjects} subjects, {settings.sites} sites, size "
             f"`{settings.size}`, seed {settings.seed}; {len(cases)} held-out test cases, {settings.folds} "
             "patient-level folds (site-stratified). CPU-sized nnU-Net plans (batch "
             f"{settings.batch_size}, nnU-Net's feature widths halved, the same for every model); no mirroring at "
             "validation or prediction (`_noTTA`).", "",
             f"- **Single models** (`{settings.schedule_name('<Trainer>')}`): {settings.epochs} epochs x "
             f"{settings.iterations} iterations on fold 0, the same budget for each: the comparison of the "
             "report. Training is seeded (`NNUNET_IPH_SEED`), so a re-run gives the same numbers. A few hundred "
             "iterations on CPU: a model may not have left the all-background solution yet (Dice 0), which the "
             "per-case table and the overlays show; longer schedules: `nnunet-iph demo` settings or the "
             "nnU-Net workflow in the README."]
    if showcase:
        lines += [f"- **Showcase** (`{settings.schedule_name('<Trainer>', showcase=True)}`): an architecture, "
                  "a 2.5D ensemble (three plane models) and a coarse-to-fine cascade (coarse stage on every fold), "
                  f"{settings.showcase_epochs} x {settings.showcase_iterations} iterations each: they show the "
                  "machinery working end to end within the CPU budget; their Dice says nothing about the methods."]
    lines += ["",
             "## Test-set Dice (hemorrhage, nnU-Net `summary.json`)", "",
             "| model | kind | trainings | mean Dice | training time (s) | prediction time (s) |",
             "|---|---|---|---|---|---|", *rows, "",
             "Per case:", "", "| case | ref voxels | " + " | ".join(f"`{n}`" for n in per_case) + " |",
             "|---|---|" + "---|" * len(per_case)]
    lines += [f"| {c} | {volumes[c]} | " + " | ".join(_dice(per_case[n][c]) for n in per_case) + " |"
              for c in cases]
    lines += ["", "(nnU-Net scores a case without hemorrhage that gets an empty prediction as NaN, shown as "
              "'empty, correct', and leaves it out of the mean.)"]
    lines += ["", f"## Overlays (case `{shown}`; green = true positive, red = false positive, "
              "blue = false negative)", ""]
    lines += [f"![{p.stem}]({p.relative_to(workdir)})" for p in images]
    lines += ["", "## Statistics across models and sites", "",
              "Surface distances, volumes, per-site results, paired tests and figures: "
              "[analysis/report.md](analysis/report.md) (all numbers in `analysis/results.json`).", "",
              "## Where things are", "",
              f"- nnU-Net folders: `{workdir}/nnUNet_raw`, `nnUNet_preprocessed`, `nnUNet_results` "
              f"(models under `{results.relative_to(workdir)}`)",
              "- the exact commands and their output: `logs/`", "",
              "## Reproducibility", "", "```json",
              json.dumps({"settings": asdict(settings), "versions": package_versions(),
                          "wall_time_s": {k: round(v, 1) for k, v in timings.items()},
                          "total_wall_time_s": round(sum(timings.values()), 1)}, indent=2),
              "```", ""]
    return write_text("\n".join(lines), workdir / "report.md")
