"""Benchmark protocols: what data, which plan, which models, how long - one TOML file each.

Why a file: the protocol is what makes two runs comparable (and what a reader must be able to
check), so every setting that changes a number lives in ``benchmarks/<name>/<protocol>.toml``
and is copied into the results. Pure Python (no torch, no nnunetv2), so it is quick to validate
and to test. Unknown keys are errors: a typo must not silently change the protocol.

Format (see ``benchmarks/ctich/cpu.toml``)::

    name = "ctich-cpu"
    kind = "cpu"                        # cpu: run here, step by step; gpu: SLURM grid (experiment)
    dataset_id = 610
    dataset_name = "CTICHcpu"
    experiment = "gpu_experiment.toml"  # gpu only: the `nnunet-iph slurm` experiment file

    [data]
    negatives = 12                      # hemorrhage-free scans beside the positive ones ("all": every scan)
    positives = "all"                   # hemorrhage-positive scans (a seeded subset only for quick tests)
    seed = 0                            # which negatives, and the patient-level folds
    folds = 5
    eval_folds = [0]                    # the folds reported
    tuning_fold = 1                     # where the settings were chosen (never an eval fold)

    [plan]                              # cpu: one 2D configuration derived from each plane plan
    configuration = "2d_cpu"
    spacing_mm = 2.0                    # in-plane spacing; coarser axes (5 mm slices) are kept
    batch_size = 12
    features_per_stage = [16, 32, 64, 128, 256]
    max_patch = 128
    arch_configuration = "2d_cpu_arch"  # same data, patch and batch, for trainers with their own network
    arch_kwargs = { width = 0.25 }

    [schedule]
    epochs = 40                         # fixed iteration count: epochs x iterations
    iterations = 50
    tta = false                         # no mirroring at validation/inference (trainer suffix _noTTA)

    [runtime]
    device = "cpu"
    torch_threads = 0                   # 0: nnU-Net's default (all cores)
    training_seed = 0                   # optional: seeded training, augmentation in the main process (slower)

    [analysis]
    metric_source = "evaluate"          # evaluate: HD95, NSD, volumes vs the labels; summary: nnU-Net's Dice only
    memory_limit_gb = 0                 # address-space cap of the scoring (0: half the RAM)

    [[model]]                           # one per column of the results, in this order
    name = "focal+Dice 2.5D"            # the column's title
    trainer = "nnUNetTrainerFocalDice"  # -tr (the protocol's schedule suffix is appended)
    planes = ["axial", "coronal", "sagittal"]   # default ["axial"]; > 1 plane: ensemble of the plane models
    arch = false                        # true: builds its own network, trains on arch_configuration
    baseline = false                    # true for exactly one model: the reference of the paired tests
    intensity = "midl2026"              # intensity protocol (planning.intensity; default "nnunet"): own plans + data
    restrict_to_brain = true            # predictions restricted to the intracranial mask before scoring
    # gpu only: configuration = "3d_fullres" (nnU-Net's configuration, default 2d) and
    #           plans = "nnUNetPlans_cascade" (the plans identifier when not a plane plan)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnunet_iph.cluster.experiment import TrainTask
from nnunet_iph.planning import PLANES
from nnunet_iph.planning.intensity import DEFAULT_PROTOCOL, PROTOCOLS, variant_plans_name
from nnunet_iph.tomlio import read_settings

KINDS = ("cpu", "gpu")
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
TOP_KEYS = {"name", "kind", "description", "dataset_id", "dataset_name", "experiment", "data", "plan", "schedule",
            "runtime", "analysis", "model"}
ANALYSIS_KEYS = {"metric_source", "memory_limit_gb"}
DATA_KEYS = {"positives", "negatives", "seed", "folds", "eval_folds", "tuning_fold"}
PLAN_KEYS = {"configuration", "spacing_mm", "batch_size", "features_per_stage", "max_patch",
             "arch_configuration", "arch_kwargs", "plans_prefix"}
SCHEDULE_KEYS = {"epochs", "iterations", "tta"}
RUNTIME_KEYS = {"device", "torch_threads", "num_processes", "training_seed"}
MODEL_KEYS = {"name", "trainer", "planes", "arch", "baseline", "configuration", "plans", "intensity",
              "restrict_to_brain"}


@dataclass(frozen=True)
class PlanSpec:
    """The one 2D configuration every CPU model trains on (derived per plane, see ``cpu_config``)."""

    configuration: str = "2d_cpu"
    spacing_mm: float = 2.0
    batch_size: int = 12
    features_per_stage: tuple[int, ...] = (16, 32, 64, 128, 256)
    max_patch: int = 128
    arch_configuration: str = "2d_cpu_arch"
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    plans_prefix: str = "nnUNetPlans"

    @property
    def total_stride(self) -> int:
        """Patch axes must be multiples of this (stride 2 between the stages)."""
        return 2 ** (len(self.features_per_stage) - 1)


@dataclass(frozen=True)
class ModelSpec:
    """One column of the results: a trainer on one plane, or the ensemble of its plane models."""

    name: str
    trainer: str
    planes: tuple[str, ...] = ("axial",)
    arch: bool = False
    baseline: bool = False
    configuration: str | None = None  # gpu protocol: nnU-Net's configuration (default 2d)
    plans: str | None = None  # gpu protocol: plans identifier when not a plane plan (e.g. the cascade)
    intensity: str = DEFAULT_PROTOCOL  # planning.intensity protocol: its own plans and preprocessed data
    restrict_to_brain: bool = False  # predictions restricted to the intracranial mask before scoring

    @property
    def is_ensemble(self) -> bool:
        return len(self.planes) > 1


@dataclass(frozen=True)
class Protocol:
    name: str
    kind: str
    dataset_id: int
    dataset_name: str
    models: tuple[ModelSpec, ...]
    negatives: int | None = 12  # None: every hemorrhage-free scan
    positives: int | None = None  # None: every hemorrhage-positive scan
    seed: int = 0
    folds: int = 5
    eval_folds: tuple[int, ...] = (0,)
    tuning_fold: int | None = None
    plan: PlanSpec | None = None
    epochs: int | None = None
    iterations: int | None = None
    tta: bool = True
    device: str = "cpu"
    torch_threads: int = 0
    num_processes: int = 2
    training_seed: int | None = None
    metric_source: str = "evaluate"
    memory_limit_gb: float = 0.0
    experiment: Path | None = None
    description: str = ""
    source: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def dataset(self) -> str:
        return f"Dataset{self.dataset_id:03d}_{self.dataset_name}"

    @property
    def baseline(self) -> ModelSpec:
        return next(m for m in self.models if m.baseline)

    def scheduled(self, trainer: str) -> str:
        """The trainer name nnU-Net trains: ``<trainer>_<E>ep_<I>it[_noTTA]`` under a fixed schedule."""
        if self.epochs is None:
            return trainer
        return f"{trainer}_{self.epochs}ep_{self.iterations}it" + ("" if self.tta else "_noTTA")

    def plans_for(self, model: ModelSpec, plane: str) -> str:
        if model.plans:
            return model.plans
        prefix = self.plan.plans_prefix if self.plan else "nnUNetPlans"
        if model.intensity == DEFAULT_PROTOCOL:
            return f"{prefix}_{plane}"
        return variant_plans_name(f"{prefix}_{plane}", model.intensity, plane)

    def intensity_plans(self) -> dict[str, tuple[str, str]]:
        """``{variant plans id: (plane, protocol)}`` of the models with another intensity protocol."""
        return {self.plans_for(m, p): (p, m.intensity) for m in self.models if not m.plans
                and m.intensity != DEFAULT_PROTOCOL for p in m.planes}

    def configuration_for(self, model: ModelSpec) -> str:
        if model.configuration:
            return model.configuration
        if self.plan is None:
            return "2d"
        return self.plan.arch_configuration if model.arch else self.plan.configuration

    def member_runs(self, model: ModelSpec, fold: int) -> list[TrainTask]:
        """The runs a model needs for one fold (one per plane)."""
        return [TrainTask(self.scheduled(model.trainer), self.plans_for(model, p), self.configuration_for(model), str(fold))
                for p in model.planes]

    def runs(self) -> list[TrainTask]:
        """Every training run of the protocol, once each (an ensemble reuses its axial member), in model order."""
        out: dict[TrainTask, None] = {}
        for model in self.models:
            for fold in self.eval_folds:
                for run in self.member_runs(model, fold):
                    out.setdefault(run, None)
        return list(out)

    def ensemble_member_runs(self) -> set[TrainTask]:
        """Runs whose validation probabilities an ensemble averages (trained with ``--npz``)."""
        return {r for m in self.models if m.is_ensemble for f in self.eval_folds for r in self.member_runs(m, f)}

    def planes(self) -> list[str]:
        return [p for p in PLANES if any(p in m.planes for m in self.models if not m.plans)]

    def configurations(self) -> list[str]:
        return list(dict.fromkeys(self.configuration_for(m) for m in self.models if not m.plans))


def _err(source: Path | None, msg: str) -> ValueError:
    return ValueError(f"{source or 'protocol'}: {msg}")


def _check_keys(table: Any, known: set[str], where: str, source: Path | None) -> dict[str, Any]:
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise _err(source, f"{where} must be a table")
    unknown = set(table) - known
    if unknown:
        raise _err(source, f"{where}: unknown key(s) {sorted(unknown)} (known: {sorted(known)})")
    return table


def _int(value: Any, key: str, source: Path | None, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _err(source, f"{key} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise _err(source, f"{key} must be >= {minimum}, got {value}")
    return value


def load_protocol(path: str | os.PathLike) -> Protocol:
    path = Path(path).resolve()
    return build_protocol(read_settings(path, "protocol file"), source=path)


def _model(entry: Any, i: int, source: Path | None) -> ModelSpec:
    entry = _check_keys(entry, MODEL_KEYS, f"[[model]] #{i + 1}", source)
    for key in ("name", "trainer"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise _err(source, f"[[model]] #{i + 1}: '{key}' (a string) is required")
    where = f"[[model]] {entry['name']!r}"
    if not NAME_RE.match(entry["trainer"]):
        raise _err(source, f"{where}: trainer {entry['trainer']!r} is not a class name")
    planes = entry.get("planes", ["axial"])
    if isinstance(planes, str):
        planes = [planes]
    if not planes or any(p not in PLANES for p in planes) or len(set(planes)) != len(planes):
        raise _err(source, f"{where}: planes must be distinct values of {list(PLANES)}, got {planes!r}")
    for key in ("configuration", "plans"):
        if entry.get(key) is not None and not NAME_RE.match(str(entry[key])):
            raise _err(source, f"{where}: {key} {entry[key]!r} is not a valid name")
    intensity = entry.get("intensity", DEFAULT_PROTOCOL)
    if intensity not in PROTOCOLS:
        raise _err(source, f"{where}: intensity {intensity!r} is not a protocol (choose from {sorted(PROTOCOLS)})")
    if intensity != DEFAULT_PROTOCOL and entry.get("plans"):
        raise _err(source, f"{where}: give 'plans' or 'intensity', not both (an intensity protocol has its own plans)")
    restrict = entry.get("restrict_to_brain", False)
    if not isinstance(restrict, bool):
        raise _err(source, f"{where}: restrict_to_brain must be true or false, got {restrict!r}")
    return ModelSpec(name=entry["name"], trainer=entry["trainer"], planes=tuple(planes),
                     arch=bool(entry.get("arch", False)), baseline=bool(entry.get("baseline", False)),
                     configuration=entry.get("configuration"), plans=entry.get("plans"), intensity=intensity,
                     restrict_to_brain=restrict)


def _plan(raw: dict[str, Any], source: Path | None) -> PlanSpec:
    features = raw.get("features_per_stage", list(PlanSpec.features_per_stage))
    if not isinstance(features, list) or len(features) < 2 or not all(
            isinstance(f, int) and not isinstance(f, bool) and f > 0 for f in features):
        raise _err(source, f"[plan] features_per_stage must be a list of >= 2 positive integers, got {features!r}")
    spacing = raw.get("spacing_mm", PlanSpec.spacing_mm)
    if isinstance(spacing, bool) or not isinstance(spacing, (int, float)) or spacing <= 0:
        raise _err(source, f"[plan] spacing_mm must be a positive number, got {spacing!r}")
    arch_kwargs = raw.get("arch_kwargs", {})
    if not isinstance(arch_kwargs, dict):
        raise _err(source, "[plan] arch_kwargs must be a table")
    spec = PlanSpec(configuration=str(raw.get("configuration", PlanSpec.configuration)),
                    spacing_mm=float(spacing),
                    batch_size=_int(raw.get("batch_size", PlanSpec.batch_size), "[plan] batch_size", source, 1),
                    features_per_stage=tuple(features),
                    max_patch=_int(raw.get("max_patch", PlanSpec.max_patch), "[plan] max_patch", source, 1),
                    arch_configuration=str(raw.get("arch_configuration", PlanSpec.arch_configuration)),
                    arch_kwargs=dict(arch_kwargs), plans_prefix=str(raw.get("plans_prefix", "nnUNetPlans")))
    for name in (spec.configuration, spec.arch_configuration, spec.plans_prefix):
        if not NAME_RE.match(name):
            raise _err(source, f"[plan] {name!r} is not a valid name")
    if spec.configuration == spec.arch_configuration:
        raise _err(source, "[plan] configuration and arch_configuration must differ")
    if spec.max_patch % spec.total_stride:
        raise _err(source, f"[plan] max_patch {spec.max_patch} is not a multiple of the total stride "
                           f"{spec.total_stride} ({len(spec.features_per_stage)} stages)")
    return spec


def build_protocol(raw: dict[str, Any], source: Path | None = None) -> Protocol:
    """Validate a parsed protocol; every error names the file and the key."""
    raw = _check_keys(raw, TOP_KEYS, "top level", source)
    kind = raw.get("kind", "cpu")
    if kind not in KINDS:
        raise _err(source, f"kind must be one of {list(KINDS)}, got {kind!r}")
    name = str(raw.get("name", f"ctich-{kind}"))
    if not NAME_RE.match(name):
        raise _err(source, f"name {name!r}: letters, digits, '_', '-', '.' only")
    dataset_id = _int(raw.get("dataset_id"), "dataset_id", source, 1)
    if dataset_id > 999:
        raise _err(source, f"dataset_id must be 1-999, got {dataset_id}")
    dataset_name = raw.get("dataset_name")
    if not isinstance(dataset_name, str) or not re.match(r"^\w+$", dataset_name):
        raise _err(source, f"dataset_name must be letters/digits/underscores, got {dataset_name!r}")

    data = _check_keys(raw.get("data"), DATA_KEYS, "[data]", source)
    negatives = data.get("negatives", 12)
    if negatives == "all":
        negatives = None
    elif not (isinstance(negatives, int) and not isinstance(negatives, bool) and negatives >= 0):
        raise _err(source, f"[data] negatives must be an integer >= 0 or \"all\", got {negatives!r}")
    positives = data.get("positives", "all")
    if positives == "all":
        positives = None
    elif not (isinstance(positives, int) and not isinstance(positives, bool) and positives >= 1):
        raise _err(source, f"[data] positives must be an integer >= 1 or \"all\", got {positives!r}")
    folds = _int(data.get("folds", 5), "[data] folds", source, 2)
    eval_folds = data.get("eval_folds", [0])
    if isinstance(eval_folds, int):
        eval_folds = [eval_folds]
    if not isinstance(eval_folds, list) or not eval_folds or any(
            not isinstance(f, int) or isinstance(f, bool) or not 0 <= f < folds for f in eval_folds):
        raise _err(source, f"[data] eval_folds must be fold numbers 0..{folds - 1}, got {eval_folds!r}")
    tuning = data.get("tuning_fold")
    if tuning is not None:
        tuning = _int(tuning, "[data] tuning_fold", source, 0)
        if tuning in eval_folds:
            raise _err(source, f"[data] tuning_fold {tuning} is an evaluation fold: settings must not be chosen "
                               "on the folds that are reported")

    plan = _plan(_check_keys(raw.get("plan"), PLAN_KEYS, "[plan]", source), source) if "plan" in raw else None
    schedule = _check_keys(raw.get("schedule"), SCHEDULE_KEYS, "[schedule]", source)
    epochs = iterations = None
    tta = schedule.get("tta", True)
    if not isinstance(tta, bool):
        raise _err(source, f"[schedule] tta must be true or false, got {tta!r}")
    if schedule:
        if not {"epochs", "iterations"} <= set(schedule):
            raise _err(source, "[schedule] needs both epochs and iterations")
        epochs = _int(schedule["epochs"], "[schedule] epochs", source, 1)
        iterations = _int(schedule["iterations"], "[schedule] iterations", source, 1)
    runtime = _check_keys(raw.get("runtime"), RUNTIME_KEYS, "[runtime]", source)
    device = runtime.get("device", "cpu" if kind == "cpu" else "cuda")
    if device not in ("cpu", "cuda", "mps"):
        raise _err(source, f"[runtime] device must be cpu, cuda or mps, got {device!r}")
    threads = _int(runtime.get("torch_threads", 0), "[runtime] torch_threads", source, 0)
    nproc = _int(runtime.get("num_processes", 2), "[runtime] num_processes", source, 1)
    training_seed = runtime.get("training_seed")
    if training_seed is not None:
        training_seed = _int(training_seed, "[runtime] training_seed", source, 0)

    analysis = _check_keys(raw.get("analysis"), ANALYSIS_KEYS, "[analysis]", source)
    metric_source = analysis.get("metric_source", "evaluate")
    if metric_source not in ("evaluate", "summary"):
        raise _err(source, f"[analysis] metric_source must be evaluate or summary, got {metric_source!r}")
    memory = analysis.get("memory_limit_gb", 0)
    if isinstance(memory, bool) or not isinstance(memory, (int, float)) or memory < 0:
        raise _err(source, f"[analysis] memory_limit_gb must be a number >= 0, got {memory!r}")

    entries = raw.get("model")
    if not isinstance(entries, list) or not entries:
        raise _err(source, "at least one [[model]] is required")
    models = tuple(_model(e, i, source) for i, e in enumerate(entries))
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise _err(source, f"model names must be unique, got {names}")
    restricted = [m.name for m in models if m.restrict_to_brain and not m.is_ensemble]
    if restricted and len(eval_folds) > 1:
        raise _err(source, f"restrict_to_brain rows {restricted} score one fold's predictions: give one eval fold "
                           f"(got {eval_folds})")
    baselines = [m.name for m in models if m.baseline]
    if len(baselines) != 1:
        raise _err(source, f"exactly one [[model]] must have baseline = true, got {baselines or 'none'}")
    if kind == "cpu":
        if plan is None:
            raise _err(source, "a cpu protocol needs a [plan] table (the shared CPU configuration)")
        if epochs is None:
            raise _err(source, "a cpu protocol needs a [schedule] (fixed epochs x iterations for every model)")
        if any(m.plans or m.configuration for m in models):
            raise _err(source, "cpu models take plans and configuration from [plan]; remove 'plans'/'configuration'")
    experiment = None
    if kind == "gpu":
        if not raw.get("experiment"):
            raise _err(source, "a gpu protocol needs 'experiment' (the `nnunet-iph slurm` experiment file)")
        base = source.parent if source else Path.cwd()
        experiment = (base / str(raw["experiment"])).resolve()
    return Protocol(name=name, kind=kind, dataset_id=dataset_id, dataset_name=dataset_name, models=models,
                    negatives=negatives, positives=positives, seed=_int(data.get("seed", 0), "[data] seed", source, 0), folds=folds,
                    eval_folds=tuple(eval_folds), tuning_fold=tuning, plan=plan, epochs=epochs,
                    iterations=iterations, tta=tta, device=device, torch_threads=threads, num_processes=nproc,
                    training_seed=training_seed, metric_source=metric_source, memory_limit_gb=float(memory),
                    experiment=experiment, description=str(raw.get("description", "")), source=source, raw=raw)
