"""The demo's Markdown report: test-set Dice per model, per case, overlays, settings, versions.

The Dice values are those of ``nnunet-iph analyze`` (its ``per_case.csv`` and ``results.json``),
not a second computation: the demo report and the analysis report give the same number for the
same case, under the one empty-mask convention of :mod:`nnunet_iph.analysis.metric_table`; the
hemorrhage-case mean is the mean of those per-case values over the cases with a reference bleed.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nnunet_iph.analysis.metric_table import empty_rule
from nnunet_iph.environment import package_versions
from nnunet_iph.imageio import write_text

if TYPE_CHECKING:
    from nnunet_iph.demo import DemoModel, DemoSettings


@dataclass(frozen=True)
class DemoDice:
    """Test-set Dice of every system as ``nnunet-iph analyze`` scored it: ``mean`` over all test cases
    (an empty reference predicted empty counts 1), ``positive_mean`` over the cases with a reference
    hemorrhage only (where a model that predicts nothing scores 0, not 1), ``per_case``."""
    mean: dict[str, float]
    positive_mean: dict[str, float]
    per_case: dict[str, dict[str, float]]
    positive_cases: tuple[str, ...]


def analysis_dice(analysis: Path) -> DemoDice:
    """:class:`DemoDice` as ``nnunet-iph analyze`` wrote it to ``analysis`` (the hemorrhage label,
    split ``test``; a hemorrhage-positive case: ``volume_ref_ml`` > 0 in ``per_case.csv``)."""
    import pandas as pd

    results = json.loads((analysis / "results.json").read_text(encoding="utf-8"))
    try:
        describe = results["analyses"]["test"]["metrics"]["dice"]["describe"]
    except KeyError as err:
        raise ValueError(f"{analysis / 'results.json'}: no test-set Dice (missing key {err})") from None
    means = {row["system"]: row["mean"] for row in describe}
    table = pd.read_csv(analysis / "per_case.csv", dtype={"case": str, "label": str})
    table = table[(table["split"] == "test") & (table["label"] == "1")]
    positive = table[table["volume_ref_ml"].astype(float) > 0]
    per_case = {system: dict(zip(rows["case"], rows["dice"].astype(float))) for system, rows in table.groupby("system")}
    # NaN, not a pass, when a case's Dice is NaN or no test case has a hemorrhage
    positive_mean = {system: float(positive.loc[positive["system"] == system, "dice"].astype(float).mean(skipna=False))
                     for system in per_case}
    return DemoDice(means, positive_mean, per_case, tuple(sorted(positive["case"].unique())))


def check_rule(min_dice: float) -> str:
    """The rule a demo model must pass, in words (the CLI's error line and the report state it)."""
    return (f"mean test Dice >= {min_dice:g} over all test cases and >= {min_dice:g} over the "
            "hemorrhage-positive ones")


def failed_models(mean: dict[str, float], positive_mean: dict[str, float],
                  min_dice: float) -> dict[str, tuple[float, float]]:
    """The models failing :func:`check_rule` (NaN counts as below), with their (mean, positive-case mean)."""
    def passes(dice: float) -> bool:
        return math.isfinite(dice) and dice >= min_dice

    return {name: (dice, positive_mean[name]) for name, dice in mean.items()
            if not (passes(dice) and passes(positive_mean[name]))}


def write_report(workdir: Path, raw: Path, predictions: Path, settings: DemoSettings, models: list[DemoModel],
                 results: Path, timings: dict[str, float], dice: DemoDice) -> Path:
    """``dice``: :func:`analysis_dice` of the demo's analysis folder."""
    import SimpleITK as sitk

    from nnunet_iph.analysis.figures import overlay_png

    def read(path: Path):
        return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))

    means, per_case = dice.mean, dice.per_case
    failed = failed_models(means, dice.positive_mean, settings.min_dice) if settings.min_dice is not None else {}
    rows = []
    for m in models:
        train_s = sum(timings[t.step_name] for t in m.trainings)
        learned = "" if settings.min_dice is None else (" | **no**" if m.label in failed else " | yes")
        rows.append(f"| `{m.label}` | {m.kind} | {len(m.trainings)} | {means[m.label]:.3f} | "
                    f"{dice.positive_mean[m.label]:.3f}{learned} | "
                    f"{train_s:.0f} | {timings[f'predict {m.label}']:.0f} |")
    cases = sorted(per_case[models[0].label])
    volumes = {c: int(read(raw / "labelsTs" / f"{c}.nii.gz").sum()) for c in cases}
    shown = max(volumes, key=volumes.get)  # the largest reference hemorrhage, shown for every model
    ct, ref = read(raw / "imagesTs" / f"{shown}_0000.nii.gz"), read(raw / "labelsTs" / f"{shown}.nii.gz")
    images = [overlay_png(ct, ref, read(predictions / f"model{i}" / f"{shown}.nii.gz"),
                          workdir / "report_figures" / f"overlay_model{i}.png",
                          title=f"{m.label}: {shown} (Dice {per_case[m.label][shown]:.3f})")
              for i, m in enumerate(models)]

    showcase = any(m.kind.startswith("showcase") for m in models)
    extra_epochs = settings.architectures and settings.architecture_extra_epochs
    lines = ["# nnunet-iph demo report", "",
             f"Synthetic multi-site head-CT phantom: {settings.subjects} subjects, {settings.sites} sites, size "
             f"`{settings.size}`, seed {settings.seed}; {len(cases)} held-out test cases, {settings.folds} "
             "patient-level folds (site-stratified). CPU-sized nnU-Net plans (batch "
             f"{settings.batch_size}, nnU-Net's feature widths halved, the same for every model); no mirroring at "
             "validation or prediction (`_noTTA`).", "",
             f"- **Every model**: intensity protocol `{settings.intensity}`"
             + (f", {settings.sampling} % of each batch's patches centred on hemorrhage (`_fg{settings.sampling}`)"
                if settings.sampling else "")
             + ", seeded training (`NNUNET_IPH_SEED`: a re-run gives the same numbers).",
             f"- **Single models** (`{settings.schedule_name('<Trainer>')}`): {settings.epochs} epochs x "
             f"{settings.iterations} iterations on fold 0 (nnU-Net's default trainer, focal + Dice"
             + (f", architectures at width {settings.width:g}" if settings.architectures else "")
             + (f" with {settings.architecture_extra_epochs} more epochs "
                f"(`{settings.schedule_name('<Trainer>', architecture=True)}`: the FPN, trained from scratch, "
                "predicts nothing for 3 epochs and at 6 missed the small test bleed)" if extra_epochs else "")
             + "), " + ("otherwise " if extra_epochs else "")
             + "the same budget for each: the comparison of the report."]
    if showcase:
        lines += [f"- **Showcase** (`{settings.schedule_name('<Trainer>', showcase=True)}`): "
                  "a 2.5D ensemble (three plane models) and a coarse-to-fine cascade (coarse stage on every fold), "
                  f"{settings.showcase_epochs} x {settings.showcase_iterations} iterations each."]
    if settings.min_dice is not None:
        lines += [f"- **Every model must learn**: {check_rule(settings.min_dice)} (a model that misses "
                  "every bleed fails, however well it leaves the empty cases empty); otherwise `nnunet-iph demo` "
                  "exits with status 1 after writing this report."]
    checked = settings.min_dice is not None
    lines += ["",
             "## Test-set Dice (hemorrhage)", "",
             "| model | kind | trainings | mean Dice | mean Dice, hemorrhage cases" + (" | learned" if checked else "")
             + " | training time (s) | prediction time (s) |",
             "|---|---|---|---|---|" + ("---|" if checked else "") + "---|---|", *rows, "",
             "Per case:", "", "| case | ref voxels | " + " | ".join(f"`{m.label}`" for m in models) + " |",
             "|---|---|" + "---|" * len(models)]
    lines += [f"| {c} | {volumes[c]} | " + " | ".join(f"{per_case[m.label][c]:.3f}" for m in models) + " |"
              for c in cases]
    lines += ["", f"Scored by `nnunet-iph analyze` (the numbers of [analysis/report.md](analysis/report.md) and "
              f"`analysis/per_case.csv`); the mean is over all {len(cases)} test cases, the hemorrhage-case mean "
              f"over the {len(dice.positive_cases)} with a reference hemorrhage "
              f"({', '.join(dice.positive_cases) or 'none'}). Empty masks: "
              f"{empty_rule('dice')}."]
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
