"""``nnunet-iph demo``: the main job end to end on CPU, on a generated phantom cohort.

phantom -> multi-site conversion -> nnU-Net plan + preprocess (2d) -> train nnU-Net's default
trainer and ours briefly -> predict held-out subjects -> evaluate (nnU-Net summary.json) ->
``nnunet-iph analyze`` (surface metrics, statistics, figures) -> Markdown report with a Dice
table and overlay figures. Every nnU-Net step runs through its real console script, so the
demo exercises exactly what a user types. Re-running reuses finished steps (trained folds,
the phantom) and is safe after an interruption.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

from tqdm import tqdm

from nnunet_iph.environment import apply_nnunet_env
from nnunet_iph.imageio import write_text
from nnunet_iph.nnunet_cli import run_logged

DATASET_ID = 501
DATASET_NAME = "IPHPhantom"


@dataclass(frozen=True)
class DemoSettings:
    subjects: int
    sites: int
    size: str
    epochs: int
    iterations: int
    trainers: tuple[str, ...] = ("nnUNetTrainer", "nnUNetTrainerFocalDice")
    test_fraction: float = 0.25
    seed: int = 0

    def schedule_name(self, trainer: str) -> str:
        return f"{trainer}_{self.epochs}ep_{self.iterations}it"


QUICK = DemoSettings(subjects=8, sites=2, size="tiny", epochs=3, iterations=8)
DEFAULT = DemoSettings(subjects=16, sites=3, size="tiny", epochs=12, iterations=15)


def run_demo(workdir: str | Path, settings: DemoSettings = DEFAULT, progress: bool = True) -> Path:
    """Run every step and return the path of ``report.md``."""
    from nnunet_iph.dataset_conversion import convert_multisite, install_splits
    from nnunet_iph.phantom import PhantomConfig, generate_cohort

    workdir = Path(workdir).resolve()
    env = apply_nnunet_env(workdir)
    os.environ.setdefault("nnUNet_n_proc_DA", "2")
    os.environ.setdefault("nnUNet_def_n_proc", "2")
    os.environ.setdefault("nnUNet_compile", "f")
    logs = workdir / "logs"
    dataset = f"Dataset{DATASET_ID:03d}_{DATASET_NAME}"
    results = Path(env["nnUNet_results"]) / dataset
    timings: dict[str, float] = {}
    steps = ["phantom", "convert", "plan_and_preprocess",
             *[f"train {t}" for t in settings.trainers], *[f"predict {t}" for t in settings.trainers],
             "analyze", "report"]
    bar = tqdm(steps, desc="demo", unit="step", disable=not progress)

    def step(name: str):
        bar.set_postfix_str(name)
        return time.perf_counter()

    t = step("phantom")
    manifest = workdir / "phantom" / "manifest.csv"
    if not manifest.is_file():
        manifest = generate_cohort(workdir / "phantom", PhantomConfig(
            n_subjects=settings.subjects, n_sites=settings.sites, size=settings.size, seed=settings.seed),
            progress=False)
    timings["phantom"] = time.perf_counter() - t
    bar.update()

    t = step("convert")
    raw = convert_multisite(manifest, DATASET_ID, DATASET_NAME, env["nnUNet_raw"],
                            test_fraction=settings.test_fraction, seed=settings.seed)
    timings["convert"] = time.perf_counter() - t
    bar.update()

    t = step("plan_and_preprocess")
    run_logged(["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "2d", "-np", "2",
                "--verify_dataset_integrity"], logs / "plan_and_preprocess.log")
    install_splits(raw)  # site-stratified patient folds instead of nnU-Net's random ones
    timings["plan_and_preprocess"] = time.perf_counter() - t
    bar.update()

    for trainer in settings.trainers:
        name = settings.schedule_name(trainer)
        t = step(f"train {name}")
        if not (results / f"{name}__nnUNetPlans__2d" / "fold_0" / "checkpoint_final.pth").is_file():
            run_logged(["nnUNetv2_train", str(DATASET_ID), "2d", "0", "-tr", name, "-device", "cpu"],
                       logs / f"train_{name}.log")
        timings[f"train {name}"] = time.perf_counter() - t
        bar.update()

    predictions = workdir / "predictions"
    for trainer in settings.trainers:
        name = settings.schedule_name(trainer)
        t = step(f"predict {name}")
        out = predictions / name
        run_logged(["nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(out), "-d", str(DATASET_ID),
                    "-c", "2d", "-f", "0", "-tr", name, "-device", "cpu", "-npp", "0", "-nps", "0",
                    "--disable_tta"], logs / f"predict_{name}.log")
        run_logged(["nnUNetv2_evaluate_simple", str(raw / "labelsTs"), str(out), "-l", "1", "-np", "1",
                    "-o", str(out / "summary.json")], logs / f"evaluate_{name}.log")
        timings[f"predict {name}"] = time.perf_counter() - t
        bar.update()

    t = step("analyze")
    analysis = workdir / "analysis"
    run_logged(["nnunet-iph", "analyze", "--cases", str(raw / "cases.csv"), "--test-labels", str(raw / "labelsTs"),
                "--test-images", str(raw / "imagesTs"), "-o", str(analysis), "--seed", str(settings.seed),
                "--n-boot", "1000",
                *[a for t in settings.trainers for a in ("--predictions", f"{settings.schedule_name(t)}="
                                                         f"{predictions / settings.schedule_name(t)}")]],
               logs / "analyze.log")
    timings["analyze"] = time.perf_counter() - t
    bar.update()

    t = step("report")
    report = write_report(workdir, raw, predictions, settings, timings)
    timings["report"] = time.perf_counter() - t
    bar.update()
    bar.close()
    return report


def _versions() -> dict[str, str]:
    pkgs = ("nnunet-iph", "nnunetv2", "torch", "SimpleITK", "numpy")
    return {"python": platform.python_version(), **{p: version(p) for p in pkgs}}


def write_report(workdir: Path, raw: Path, predictions: Path, settings: DemoSettings,
                 timings: dict[str, float]) -> Path:
    """Markdown report: test-set Dice per trainer, per-case table, overlays, settings, versions."""
    import SimpleITK as sitk

    from nnunet_iph.analysis.figures import overlay_png

    figures = workdir / "report_figures"
    rows, per_case, images = [], {}, []
    for trainer in settings.trainers:
        name = settings.schedule_name(trainer)
        summary = json.loads((predictions / name / "summary.json").read_text(encoding="utf-8"))
        per_case[name] = {Path(c["reference_file"]).name.removesuffix(".nii.gz"): c["metrics"]["1"]["Dice"]
                          for c in summary["metric_per_case"]}
        rows.append((name, summary["foreground_mean"]["Dice"], timings[f"train {name}"]))
    cases = sorted(next(iter(per_case.values())))
    # the test case with the largest reference hemorrhage, shown for every trainer
    volumes = {c: int(sitk.GetArrayViewFromImage(sitk.ReadImage(str(raw / "labelsTs" / f"{c}.nii.gz"))).sum())
               for c in cases}
    shown = max(volumes, key=volumes.get)
    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "imagesTs" / f"{shown}_0000.nii.gz")))
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "labelsTs" / f"{shown}.nii.gz")))
    for name in per_case:
        pred = sitk.GetArrayFromImage(sitk.ReadImage(str(predictions / name / f"{shown}.nii.gz")))
        png = overlay_png(ct, ref, pred, figures / f"overlay_{name}.png",
                          title=f"{name}: {shown} (Dice {per_case[name][shown]:.3f})")
        images.append(png)

    lines = ["# nnunet-iph demo report", "",
             f"Synthetic multi-site head-CT phantom: {settings.subjects} subjects, {settings.sites} sites, "
             f"size `{settings.size}`, seed {settings.seed}; {len(cases)} held-out test cases. "
             f"nnU-Net `2d` configuration, fold 0, {settings.epochs} epochs x {settings.iterations} "
             "iterations, CPU, test-time mirroring off.", "",
             "## Test-set Dice (hemorrhage, nnU-Net `summary.json`)", "",
             "| trainer | mean Dice | training time (s) |", "|---|---|---|"]
    lines += [f"| `{n}` | {d:.3f} | {s:.0f} |" for n, d, s in rows]
    lines += ["", "Per case:", "", "| case | ref voxels | " + " | ".join(f"`{n}`" for n in per_case) + " |",
              "|---|---|" + "---|" * len(per_case)]
    lines += [f"| {c} | {volumes[c]} | " + " | ".join(f"{per_case[n][c]:.3f}" for n in per_case) + " |"
              for c in cases]
    lines += ["", f"## Overlays (case `{shown}`; green = true positive, red = false positive, "
              "blue = false negative)", ""]
    lines += [f"![{p.stem}]({p.relative_to(workdir)})" for p in images]
    lines += ["", "## Statistics across trainers and sites",
              "", "Surface distances, volumes, per-site results, paired tests and figures: "
              "[analysis/report.md](analysis/report.md) (all numbers in `analysis/results.json`).",
              "", "## Reproducibility", "", "```json",
              json.dumps({"settings": asdict(settings), "versions": _versions(),
                          "wall_time_s": {k: round(v, 1) for k, v in timings.items()}}, indent=2),
              "```", ""]
    return write_text("\n".join(lines), workdir / "report.md")
