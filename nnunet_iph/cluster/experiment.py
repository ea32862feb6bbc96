"""Experiment description for cluster runs: what to train, predict and analyse, with which resources.

Why a file of its own: the grid (trainers x plans/planes x configurations x folds, cascade stages,
prediction sets, analysis) is the unit a study submits, resumes and checks; keeping it in one
TOML or JSON file makes ``plan``, ``submit`` and ``status`` agree on the same task list.
Pure Python (no torch, no nnunetv2 import), so generating scripts is instant and testable.

Format (TOML shown; JSON with the same keys works too)::

    name = "iph"                      # prefix of job and script names
    dataset = 501                     # id or full name (Dataset501_X); an id is resolved on disk
    workdir = "/scratch/iph"          # nnUNet_raw/_preprocessed/_results below it ([env] may override)
    device = "cuda"                   # nnUNetv2_train/predict -device
    bin_dir = "/opt/venv/bin"         # where nnUNetv2_* live; default: this Python's bin folder
    setup = ["module load cuda"]      # shell lines run first in every job
    ext_trainer_dirs = []             # more nnUNet_extTrainer folders (after nnunet-iph's own)

    [env]                             # extra exports, e.g. nnUNet_compile = "f"
    [resources]                       # defaults for every stage; a stage's own [resources] wins
    partition = "gpu"; account = "p1"; qos = "normal"; gpus = 1; cpus_per_task = 8
    mem = "64G"; time = "1-00:00:00"; max_parallel = 10; constraint = "a100"; extra = ["--exclusive"]

    [[train]]                         # one array task per trainer x plans x configuration x fold
    name = "planes"; trainers = [...]; plans = [...]; configurations = ["2d"]; folds = [0, 1, 2, 3, 4]
    num_gpus = 1; npz = true; args = []; after = []    # after: stages that must finish first (cascade)

    [[predict]]                       # one array task per model x part (-num_parts/-part_id)
    name = "test"; models = "planes"; input = "..."; output = "..."; num_parts = 4
    save_probabilities = true; ensemble = true; prev_stage = "<predict set>"; args = []

    [[job]]                           # any command after other stages (analysis, ensembling ...)
    name = "analysis"; after = ["planes"]; command = "..."; creates = ["..."]

Strings in ``input``, ``output``, ``command``, ``creates``, ``setup`` and ``args`` may use
``{workdir} {raw} {preprocessed} {results} {dataset} {experiment} {out} {bin}``.
Relative paths are relative to the experiment file.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnunet_iph.environment import nnunet_env
from nnunet_iph.tomlio import read_settings

PATH_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
RESOURCE_KEYS = {"partition", "account", "qos", "gpus", "gres", "cpus_per_task", "mem", "time",
                 "max_parallel", "constraint", "extra"}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
DATASET_NAME_RE = re.compile(r"^Dataset\d{3}_\w+$")
DATASET_FOLDERS = ("nnUNet_preprocessed", "nnUNet_raw", "nnUNet_results")  # where an id is looked up, in order
_DEFAULT_RESOURCES: dict[str, Any] = {"cpus_per_task": 4, "mem": "32G", "time": "1-00:00:00", "gpus": 1}


@dataclass(frozen=True)
class Resources:
    """sbatch resources of one stage; ``None`` means "leave it to the cluster's default"."""

    cpus_per_task: int = 4
    mem: str | None = "32G"
    time: str | None = "1-00:00:00"
    gpus: int = 1
    gres: str | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    max_parallel: int = 0
    extra: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrainTask:
    """One ``nnUNetv2_train`` run: nnU-Net's results folder ``<model>/fold_<fold>``."""
    trainer: str
    plans: str
    configuration: str
    fold: str

    @property
    def model(self) -> str:
        return f"{self.trainer}__{self.plans}__{self.configuration}"

    @property
    def step_name(self) -> str:
        """How progress bars, logs and timings name the run."""
        return f"train {self.model} fold {self.fold}"


@dataclass(frozen=True)
class PredictTask:
    trainer: str
    plans: str
    configuration: str
    part: int

    @property
    def model(self) -> str:
        return f"{self.trainer}__{self.plans}__{self.configuration}"


@dataclass
class Stage:
    """One sbatch script: an array (train, predict) or a single job (job, ensemble)."""

    name: str
    kind: str  # "train" | "predict" | "ensemble" | "job"
    resources: Resources
    after: list[str] = field(default_factory=list)
    tasks: list[Any] = field(default_factory=list)  # TrainTask | PredictTask; empty for single jobs
    num_gpus: int = 1
    npz: bool = False
    args: list[str] = field(default_factory=list)
    folds: list[str] = field(default_factory=list)  # predict: folds of the model stage
    input: str | None = None
    output: str | None = None
    num_parts: int = 1
    save_probabilities: bool = False
    prev_stage: str | None = None  # predict: predict set with the previous cascade stage
    prev_output: str | None = None  # predict: folder holding <model>/ of the previous stage
    prev_configuration: str | None = None
    command: str | None = None
    creates: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)  # ensemble: the model folders to average

    @property
    def is_array(self) -> bool:
        return self.kind in ("train", "predict")


@dataclass
class Experiment:
    name: str
    dataset: str  # full nnU-Net dataset name
    dataset_arg: str  # what nnUNetv2_* get (the full name works everywhere)
    device: str
    bin_dir: str
    env: dict[str, str]
    setup: list[str]
    stages: list[Stage]
    source: str  # absolute path of the experiment file ("" when built from a dict)
    notes: list[str] = field(default_factory=list)  # checks that could not be made here (paths unreachable)

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def results(self) -> str:
        return self.env["nnUNet_results"]

    def train_output(self, task: TrainTask) -> str:
        """nnU-Net's fold folder: ``<results>/<dataset>/<trainer>__<plans>__<config>/fold_<f>``."""
        return f"{self.results}/{self.dataset}/{task.model}/fold_{task.fold}"


def load_experiment(path: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> Experiment:
    """Read, validate and resolve an experiment file (see the module docstring for the format)."""
    path = Path(path).resolve()
    return build_experiment(read_settings(path, "experiment file"), source=path, out_dir=out_dir)


def _err(source: Path | None, msg: str) -> ValueError:
    return ValueError(f"{source or 'experiment'}: {msg}")


def _as_list(value: Any, key: str, source: Path | None) -> list:
    if value is None:
        return []
    if isinstance(value, (str, int)):
        return [value]
    if isinstance(value, list):
        return value
    raise _err(source, f"{key} must be a list, got {value!r}")


def _resources(raw: dict[str, Any], base: dict[str, Any], where: str, source: Path | None) -> Resources:
    unknown = set(raw) - RESOURCE_KEYS
    if unknown:
        raise _err(source, f"{where}: unknown resource keys {sorted(unknown)} (known: {sorted(RESOURCE_KEYS)})")
    merged = {**base, **raw}
    try:
        cpus = int(merged.get("cpus_per_task", 4))
        gpus = int(merged.get("gpus", 0) or 0)
        max_parallel = int(merged.get("max_parallel", 0) or 0)
    except (TypeError, ValueError):
        raise _err(source, f"{where}: cpus_per_task, gpus and max_parallel must be integers") from None
    if cpus < 1 or gpus < 0 or max_parallel < 0:
        raise _err(source, f"{where}: need cpus_per_task >= 1, gpus >= 0, max_parallel >= 0")
    extra = merged.get("extra") or []
    if isinstance(extra, str):
        extra = [extra]
    for opt in extra:
        if not str(opt).startswith("--"):
            raise _err(source, f"{where}: extra sbatch options must look like '--name=value', got {opt!r}")

    def opt(key: str) -> str | None:
        v = merged.get(key)
        return None if v in (None, "") else str(v)

    return Resources(cpus_per_task=cpus, mem=opt("mem"), time=opt("time"), gpus=gpus, gres=opt("gres"),
                     partition=opt("partition"), account=opt("account"), qos=opt("qos"),
                     constraint=opt("constraint"), max_parallel=max_parallel,
                     extra=tuple(str(e) for e in extra))


def resolve_dataset(dataset: Any, env: dict[str, str], source: Path | None) -> str:
    """Full ``DatasetNNN_Name`` for an id, looked up like nnU-Net does (preprocessed, raw, results)."""
    text = str(dataset).strip()
    if DATASET_NAME_RE.match(text):
        folders = [Path(env[var]) for var in DATASET_FOLDERS]
        reachable = [f for f in folders if f.is_dir()]
        if reachable and not any((f / text).is_dir() for f in reachable):
            raise _err(source, f"dataset: no {text} folder in {', '.join(map(str, reachable))}; convert it first, "
                               "or fix 'dataset' / 'workdir' / [env]")
        return text
    if not text.isdigit():
        raise _err(source, f"dataset must be an id (501) or a full name (Dataset501_Name), got {dataset!r}")
    prefix = f"Dataset{int(text):03d}_"
    searched = []
    for var in DATASET_FOLDERS:
        folder = Path(env[var])
        searched.append(str(folder))
        if folder.is_dir():
            hits = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name.startswith(prefix))
            if len(hits) > 1:
                raise _err(source, f"dataset {text} is ambiguous in {folder}: {hits}")
            if hits:
                return hits[0]
    raise _err(source, f"dataset {text}: no {prefix}* folder in {', '.join(searched)}; "
                       "convert it first or give the full name (Dataset501_Name)")


def check_train_grid(stages: list[Stage], env: dict[str, str], dataset: str, source: Path | None,
                     notes: list[str]) -> None:
    """Refuse before submitting what would fail (or silently collide) on the cluster: a task listed twice
    (two array tasks writing one fold folder), a trainer nobody defines, a configuration the plans
    file lacks. What cannot be checked from here (data folders not reachable) goes to ``notes``."""
    from nnunet_iph.trainer_catalog import suggest, unknown_trainers

    owner: dict[TrainTask, str] = {}
    preprocessed = Path(env["nnUNet_preprocessed"]) / dataset
    plans_cache: dict[str, dict | None] = {}
    for stage in stages:
        where = f"[[train]] {stage.name!r}"
        trainers = list(dict.fromkeys(t.trainer for t in stage.tasks))
        for task in stage.tasks:
            if task in owner:
                raise _err(source, f"{where}: {task.model} fold {task.fold} is also trained by [[train]] "
                                   f"{owner[task]!r}: two array tasks would write the same fold folder")
            owner[task] = stage.name
        unknown = unknown_trainers(trainers, env.get("nnUNet_extTrainer", ""))
        if unknown:
            names = ", ".join(f"{n!r}{suggest(n)}" for n in unknown)
            raise _err(source, f"{where} trainers: {names}: defined neither by nnU-Net nor by "
                               "nnunet-iph (`nnunet-iph trainers` lists ours, schedule suffixes included) nor in a "
                               "folder of ext_trainer_dirs / nnUNet_extTrainer")
        for plans in dict.fromkeys(t.plans for t in stage.tasks):
            configs = list(dict.fromkeys(t.configuration for t in stage.tasks if t.plans == plans))
            path = preprocessed / f"{plans}.json"
            if plans not in plans_cache:
                plans_cache[plans] = _read_plans(path, source) if path.is_file() else None
            found = plans_cache[plans]
            # an earlier stage ('after') may still write the plans: then only a note
            if found is None:
                msg = f"{where} plans: {path} not found" + ("" if preprocessed.is_dir() else
                                                            f" ({preprocessed} not reachable from here)")
                if preprocessed.is_dir() and not stage.after:
                    raise _err(source, f"{msg}; run `nnunet-iph plan` (or nnUNetv2_plan_and_preprocess) first")
                notes.append(f"{msg}: configurations {configs} not checked")
                continue
            missing = [c for c in configs if c not in found.get("configurations", {})]
            if missing:
                msg = (f"{where} configurations: {missing} not in {path} "
                       f"(it has {sorted(found.get('configurations', {}))})")
                if stage.after:
                    notes.append(f"{msg}; assuming an earlier stage adds them")
                else:
                    raise _err(source, msg)


def _read_plans(path: Path, source: Path | None) -> dict:
    try:
        plans = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise _err(source, f"plans file {path} unreadable: {err}") from None
    if not isinstance(plans, dict):
        raise _err(source, f"plans file {path} is not a JSON object")
    return plans


def build_experiment(raw: dict[str, Any], source: Path | None = None,
                     out_dir: str | os.PathLike | None = None) -> Experiment:
    """Validate a parsed description and expand the grid into stages and tasks."""
    if not isinstance(raw, dict):
        raise _err(source, "the experiment must be a table/object")
    known = {"name", "dataset", "workdir", "device", "bin_dir", "setup", "ext_trainer_dirs", "env",
             "resources", "train", "predict", "job"}
    unknown = set(raw) - known
    if unknown:
        raise _err(source, f"unknown top-level keys {sorted(unknown)} (known: {sorted(known)})")
    base_dir = source.parent if source else Path.cwd()

    def abspath(p: str) -> str:
        return str(Path(os.path.expanduser(p)) if os.path.isabs(os.path.expanduser(p))
                   else (base_dir / p).resolve())

    name = str(raw.get("name", "nnunet"))
    if not NAME_RE.match(name):
        raise _err(source, f"name must be letters, digits, '_', '-', '.', got {name!r}")
    if "dataset" not in raw:
        raise _err(source, "missing 'dataset' (id such as 501 or full name Dataset501_Name)")

    # environment: nnunet-iph's trainer folder, data folders from workdir / [env] / current environment
    workdir = raw.get("workdir")
    env = nnunet_env(abspath(str(workdir)) if workdir else None, create=False)
    extra_dirs = [abspath(str(d)) for d in _as_list(raw.get("ext_trainer_dirs"), "ext_trainer_dirs", source)]
    if extra_dirs:
        env["nnUNet_extTrainer"] = os.pathsep.join([env["nnUNet_extTrainer"], *extra_dirs])
    user_env = raw.get("env") or {}
    if not isinstance(user_env, dict):
        raise _err(source, "[env] must be a table of NAME = value")
    for key, value in user_env.items():
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise _err(source, f"[env]: invalid variable name {key!r}")
        env[key] = abspath(str(value)) if key in PATH_VARS else str(value)
    for var in PATH_VARS:
        if var not in env:
            if os.environ.get(var):
                env[var] = os.environ[var]
            else:
                raise _err(source, f"{var} unknown: set 'workdir', [env] {var}, or export it")
    dataset = resolve_dataset(raw["dataset"], env, source)

    device = str(raw.get("device", "cuda"))
    if device not in ("cuda", "cpu", "mps"):
        raise _err(source, f"device must be cuda, cpu or mps, got {device!r}")
    bin_dir = abspath(str(raw["bin_dir"])) if raw.get("bin_dir") else str(Path(sys.executable).parent)
    out = str(Path(out_dir).resolve()) if out_dir is not None else "{out}"
    placeholders = {"workdir": abspath(str(workdir)) if workdir else "", "raw": env["nnUNet_raw"],
                    "preprocessed": env["nnUNet_preprocessed"], "results": env["nnUNet_results"],
                    "dataset": dataset, "experiment": str(source or ""), "out": out, "bin": bin_dir}

    def fill(text: Any, where: str) -> str:
        try:
            return str(text).format_map(placeholders)
        except (KeyError, IndexError, ValueError) as err:
            raise _err(source, f"{where}: bad placeholder in {text!r} ({err}); "
                               f"known: {', '.join('{' + k + '}' for k in placeholders)}") from None

    base_res = raw.get("resources") or {}
    if not isinstance(base_res, dict):
        raise _err(source, "[resources] must be a table")
    base_res = {**_DEFAULT_RESOURCES, **({"gpus": 0} if device != "cuda" else {}), **base_res}
    _resources(base_res, {}, "[resources]", source)  # validate the defaults on their own

    stages: list[Stage] = []
    seen: set[str] = set()

    def new_stage(entry: dict, kind: str, index: int) -> tuple[Stage, set[str]]:
        where = f"[[{kind}]] #{index + 1}"
        if not isinstance(entry, dict):
            raise _err(source, f"{where} must be a table")
        sname = str(entry.get("name", f"{kind}{index + 1}"))
        where = f"[[{kind}]] {sname!r}"
        if not NAME_RE.match(sname):
            raise _err(source, f"{where}: name must be letters, digits, '_', '-', '.'")
        if sname in seen or f"{sname}_ensemble" in seen:
            raise _err(source, f"{where}: duplicate stage name")
        seen.add(sname)
        res = entry.get("resources") or {}
        if not isinstance(res, dict):
            raise _err(source, f"{where}: resources must be a table")
        stage = Stage(name=sname, kind=kind, resources=_resources(res, base_res, where, source),
                      after=[str(a) for a in _as_list(entry.get("after"), f"{where} after", source)],
                      args=[fill(a, where) for a in _as_list(entry.get("args"), f"{where} args", source)])
        return stage, set(entry)

    def need(entry: dict, key: str, where: str) -> list:
        values = _as_list(entry.get(key), f"{where} {key}", source)
        if not values:
            raise _err(source, f"{where}: '{key}' must name at least one value")
        return values

    for i, entry in enumerate(_as_list(raw.get("train"), "[[train]]", source)):
        stage, keys = new_stage(entry, "train", i)
        where = f"[[train]] {stage.name!r}"
        bad = keys - {"name", "trainers", "plans", "configurations", "folds", "num_gpus", "npz", "args",
                      "after", "resources"}
        if bad:
            raise _err(source, f"{where}: unknown keys {sorted(bad)}")
        trainers = [str(t) for t in need(entry, "trainers", where)]
        plans = [str(p) for p in _as_list(entry.get("plans", "nnUNetPlans"), f"{where} plans", source)]
        configs = [str(c) for c in need(entry, "configurations", where)]
        folds = [str(f) for f in _as_list(entry.get("folds", [0, 1, 2, 3, 4]), f"{where} folds", source)]
        for f in folds:
            if not (f.isdigit() or f == "all"):
                raise _err(source, f"{where}: folds must be integers or 'all', got {f!r}")
        folds = [f if f == "all" else str(int(f)) for f in folds]  # nnU-Net's folder: fold_0 for "00" too
        for key, values in (("trainers", trainers), ("plans", plans), ("configurations", configs), ("folds", folds)):
            twice = sorted({v for v in values if values.count(v) > 1})
            if twice:
                raise _err(source, f"{where} {key}: {', '.join(twice)} listed twice: two array tasks would write "
                                   "the same fold folder")
        for value in (*trainers, *plans, *configs):
            if not re.match(r"^[A-Za-z0-9_.-]+$", value):
                raise _err(source, f"{where}: {value!r} is not a valid trainer/plans/configuration name")
        stage.num_gpus = int(entry.get("num_gpus", 1))
        if stage.num_gpus < 1:
            raise _err(source, f"{where}: num_gpus must be >= 1")
        if stage.num_gpus > 1 and device != "cuda":
            raise _err(source, f"{where}: num_gpus > 1 (DDP) needs device = 'cuda'")
        if stage.num_gpus > 1 and "gpus" not in (entry.get("resources") or {}):
            stage.resources = _resources({"gpus": stage.num_gpus}, {**base_res, **(entry.get("resources") or {})},
                                         where, source)
        if stage.resources.gpus and stage.resources.gpus < stage.num_gpus:
            raise _err(source, f"{where}: num_gpus={stage.num_gpus} but resources.gpus={stage.resources.gpus}")
        stage.npz = bool(entry.get("npz", False))
        stage.folds = folds
        stage.tasks = [TrainTask(t, p, c, f) for t in trainers for p in plans for c in configs for f in folds]
        stages.append(stage)

    notes: list[str] = []
    check_train_grid(stages, env, dataset, source, notes)
    train_names = {s.name for s in stages}
    predict_entries = _as_list(raw.get("predict"), "[[predict]]", source)
    predict_sets: dict[str, Stage] = {}
    for i, entry in enumerate(predict_entries):
        stage, keys = new_stage(entry, "predict", i)
        where = f"[[predict]] {stage.name!r}"
        bad = keys - {"name", "models", "input", "output", "num_parts", "save_probabilities", "ensemble",
                      "prev_stage", "folds", "args", "after", "resources"}
        if bad:
            raise _err(source, f"{where}: unknown keys {sorted(bad)}")
        models = str(entry.get("models", ""))
        if models not in train_names:
            raise _err(source, f"{where}: models must name a [[train]] stage ({sorted(train_names)}), got {models!r}")
        train = next(s for s in stages if s.name == models)
        for key in ("input", "output"):
            if not entry.get(key):
                raise _err(source, f"{where}: missing '{key}' folder")
        stage.input = abspath(fill(entry["input"], where))
        stage.output = abspath(fill(entry["output"], where))
        stage.num_parts = int(entry.get("num_parts", 1))
        if stage.num_parts < 1:
            raise _err(source, f"{where}: num_parts must be >= 1")
        stage.save_probabilities = bool(entry.get("save_probabilities", False))
        stage.folds = [str(f) for f in _as_list(entry.get("folds", train.folds), f"{where} folds", source)]
        stage.after = [models, *[a for a in stage.after if a != models]]
        combos = sorted({(t.trainer, t.plans, t.configuration) for t in train.tasks})
        stage.tasks = [PredictTask(t, p, c, k) for (t, p, c) in combos for k in range(stage.num_parts)]
        prev = entry.get("prev_stage")
        if prev:
            prev = str(prev)
            if prev not in predict_sets:
                raise _err(source, f"{where}: prev_stage must name an earlier [[predict]] set "
                                   f"({sorted(predict_sets)}), got {prev!r}")
            prev_set = predict_sets[prev]
            prev_configs = {t.configuration for t in prev_set.tasks}
            if len(prev_configs) != 1:
                raise _err(source, f"{where}: prev_stage {prev!r} must predict exactly one configuration "
                                   f"(the cascade's lower stage), has {sorted(prev_configs)}")
            stage.prev_stage, stage.prev_output = prev, prev_set.output
            stage.prev_configuration = prev_configs.pop()
            if prev not in stage.after:
                stage.after.append(prev)
        stages.append(stage)
        predict_sets[stage.name] = stage
        if entry.get("ensemble"):
            if not stage.save_probabilities:
                raise _err(source, f"{where}: ensemble = true needs save_probabilities = true")
            if len(combos) < 2:
                raise _err(source, f"{where}: ensemble = true needs at least two models, has {len(combos)}")
            ens_name = f"{stage.name}_ensemble"
            if ens_name in seen:
                raise _err(source, f"{where}: stage name {ens_name!r} already used")
            seen.add(ens_name)
            ens = Stage(name=ens_name, kind="ensemble", after=[stage.name],
                        resources=_resources({"gpus": 0}, {**base_res, **(entry.get("resources") or {})},
                                             where, source),
                        output=f"{stage.output}/ensemble",
                        inputs=[f"{stage.output}/{t}__{p}__{c}" for (t, p, c) in combos])
            stages.append(ens)

    for i, entry in enumerate(_as_list(raw.get("job"), "[[job]]", source)):
        stage, keys = new_stage(entry, "job", i)
        where = f"[[job]] {stage.name!r}"
        bad = keys - {"name", "command", "creates", "after", "resources"}
        if bad:
            raise _err(source, f"{where}: unknown keys {sorted(bad)}")
        if not entry.get("command"):
            raise _err(source, f"{where}: missing 'command'")
        stage.command = fill(entry["command"], where)
        stage.creates = [abspath(fill(c, where)) for c in _as_list(entry.get("creates"), f"{where} creates", source)]
        if "resources" not in entry or "gpus" not in (entry.get("resources") or {}):
            stage.resources = _resources({"gpus": 0}, {**base_res, **(entry.get("resources") or {})}, where, source)
        stages.append(stage)

    if not stages:
        raise _err(source, "nothing to do: add [[train]], [[predict]] or [[job]] stages")
    names = {s.name for s in stages}
    for s in stages:
        for a in s.after:
            if a not in names:
                raise _err(source, f"stage {s.name!r}: 'after' names unknown stage {a!r} (known: {sorted(names)})")
            if a == s.name:
                raise _err(source, f"stage {s.name!r} depends on itself")

    exp = Experiment(name=name, dataset=dataset, dataset_arg=dataset, device=device, bin_dir=bin_dir, env=env,
                     setup=[fill(line, "setup") for line in _as_list(raw.get("setup"), "setup", source)],
                     stages=topological_order(stages, source), source=str(source or ""), notes=notes)
    return exp


def topological_order(stages: list[Stage], source: Path | None = None) -> list[Stage]:
    """Stages ordered so each comes after everything in its ``after`` (submission order)."""
    by_name = {s.name: s for s in stages}
    ordered: list[Stage] = []
    state: dict[str, int] = {}

    def visit(s: Stage, chain: list[str]) -> None:
        if state.get(s.name) == 2:
            return
        if state.get(s.name) == 1:
            raise _err(source, f"dependency cycle: {' -> '.join([*chain, s.name])}")
        state[s.name] = 1
        for a in s.after:
            visit(by_name[a], [*chain, s.name])
        state[s.name] = 2
        ordered.append(s)

    for s in stages:
        visit(s, [])
    return ordered

