"""Install and choose models from ``nnUNetv2_export_model_to_zip`` files (``predict --model FILE.zip``).

nnU-Net's own installer (``nnUNetv2_install_pretrained_model_from_zip``) unpacks whatever the
zip holds over ``$nnUNet_results``: it silently replaces a different model of the same name,
mixes the zip's folds with folds already there (prediction then averages both) and leaves half
a model behind when an entry turns out corrupt midway. Here the zip is first
checked (readable, CRCs, nnU-Net layout ``DatasetNNN_Name/TRAINER__PLANS__CONFIG/`` with
plans, dataset.json and fold checkpoints), an identical installed model is reused, a different
one is refused unless ``replace``, and each model folder appears complete or not at all.

What a zip does not carry: the trainer code (``nnunet-iph`` must be installed where the model
is used, with ``nnUNet_extTrainer`` set). nnU-Net's exporter packs a fixed list of files, so a
note of ours beside the model would be dropped; the version that trained a model is read from
``fold_X/debug.json`` (which the exporter keeps and where nnU-Net dumps the trainer's
attributes) when the trainer records ``nnunet_iph_version`` there.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

from nnunet_iph import __version__
from nnunet_iph.model_names import ModelIdentifier

MODEL_DIR = re.compile(r"^(?P<dataset>Dataset\d{3}_[^/]+)/(?P<model>[^/]+__[^/]+__[^/]+)/")
VERSION_KEY = "nnunet_iph_version"  # a trainer attribute, dumped into fold_X/debug.json by nnU-Net
FOLD_CHECKPOINT = re.compile(r"^fold_(?P<fold>[^/]+)/(?P<checkpoint>[^/]+\.pth)$")


@dataclass(frozen=True)
class ZipModel(ModelIdentifier):
    """One model folder inside a zip (``<dataset>/<identifier>/``)."""

    zip_path: Path
    dataset: str
    identifier: str
    checkpoints: tuple[str, ...]  # "fold_0/checkpoint_final.pth", ...
    trained_with: str | None  # nnunet_iph_version from the folds' debug.json, when recorded
    previous_stage: str | None  # the configuration's previous_stage: set for the fine stage of a cascade

    @property
    def prefix(self) -> str:
        return f"{self.dataset}/{self.identifier}/"

    @property
    def label(self) -> str:
        folds = sorted({c.split("/")[0][5:] for c in self.checkpoints})
        return f"{self.dataset}/{self.identifier} (folds {', '.join(folds)})"


@dataclass(frozen=True)
class ModelZip:
    path: Path
    files: dict[str, zipfile.ZipInfo]  # entry name -> info (directories left out)
    models: tuple[ZipModel, ...]


def _config_value(plans: dict, configuration: str, key: str):
    """``plans['configurations'][configuration][key]``, following ``inherits_from`` as nnU-Net does."""
    configs = plans.get("configurations", {})
    seen = set()
    while configuration in configs and configuration not in seen:
        seen.add(configuration)
        cfg = configs[configuration]
        if key in cfg:
            return cfg[key]
        configuration = cfg.get("inherits_from")
    return None


def _trained_with(zf: zipfile.ZipFile, prefix: str, inner: list[str]) -> str | None:
    for name in sorted(n for n in inner if re.match(r"^fold_[^/]+/debug\.json$", n)):
        try:
            version = json.loads(zf.read(prefix + name)).get(VERSION_KEY)
        except (ValueError, AttributeError):  # debug information only: never a reason to refuse a model
            continue
        if version:
            return str(version)
    return None


def _not_a_model_zip(path: Path, why: str) -> ValueError:
    return ValueError(f"{path}: not an nnU-Net model zip (made by nnUNetv2_export_model_to_zip): {why}")


def inspect_zip(path: str | os.PathLike) -> ModelZip:
    """Read and check ``path``: a readable zip, sound CRCs, safe names, at least one complete model."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model zip not found")
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise ValueError(f"{path}: corrupt zip, entry {bad} fails its CRC check (incomplete download?)")
            files = {i.filename: i for i in zf.infolist() if not i.is_dir()}
            for name in files:
                parts = PurePosixPath(name).parts
                if name.startswith("/") or "\\" in name or ".." in parts or ":" in parts[0]:
                    raise _not_a_model_zip(path, f"unsafe entry name {name!r}")
                if not re.match(r"^Dataset\d{3}_[^/]+/", name):
                    raise _not_a_model_zip(path, f"entry {name!r} is not inside a DatasetNNN_Name/ folder")
            models = []
            for dataset, identifier in sorted({(m["dataset"], m["model"]) for m in map(MODEL_DIR.match, files) if m}):
                prefix = f"{dataset}/{identifier}/"
                inner = [n[len(prefix):] for n in files if n.startswith(prefix)]
                checkpoints = tuple(sorted(n for n in inner if FOLD_CHECKPOINT.match(n)))
                missing = [f for f in ("plans.json", "dataset.json") if f not in inner]
                if missing or not checkpoints:
                    what = ", ".join(missing + ([] if checkpoints else ["fold_*/checkpoint*.pth"]))
                    raise _not_a_model_zip(path, f"model {prefix} has no {what}")
                try:
                    plans = json.loads(zf.read(prefix + "plans.json"))
                    json.loads(zf.read(prefix + "dataset.json"))
                except ValueError as err:
                    raise ValueError(f"{path}: {prefix}plans.json or dataset.json is not valid JSON ({err})") from None
                previous = _config_value(plans, identifier.split("__")[2], "previous_stage")
                models.append(ZipModel(path, dataset, identifier, checkpoints, _trained_with(zf, prefix, inner),
                                       previous))
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise ValueError(f"{path}: not a readable zip file ({err})") from None
    if not models:
        raise _not_a_model_zip(path, "no DatasetNNN_Name/TRAINER__PLANS__CONFIGURATION/ folder in it")
    return ModelZip(path, files, tuple(models))


# --------------------------------------------------------------------------- installing

def _same_file(target: Path, info: zipfile.ZipInfo) -> bool:
    if not target.is_file() or target.stat().st_size != info.file_size:
        return False
    crc = 0
    with target.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            crc = zlib.crc32(block, crc)
    return crc == info.CRC


def _installed_state(mz: ModelZip, model: ZipModel, results: Path) -> str | None:
    """None: not installed; "same": the zip's files, and no other fold checkpoint; else why it differs."""
    target = results / model.dataset / model.identifier
    if not target.exists():
        return None
    for name, info in mz.files.items():
        if name.startswith(model.prefix) and not _same_file(results / name, info):
            return f"{results / name} differs from the zip's"
    names = {c.split("/")[1] for c in model.checkpoints}  # another fold of checkpoint_final.pth, not _best
    extra = sorted(str(p.relative_to(target)) for p in target.glob("fold_*/*.pth")
                   if p.name in names and f"{model.prefix}{p.relative_to(target).as_posix()}" not in mz.files)
    if extra:
        return f"{target} also holds {', '.join(extra)} (prediction would use them too)"
    return "same"


def install(mz: ModelZip, results: str | os.PathLike, replace: bool = False) -> dict[ZipModel, str]:
    """Unpack ``mz`` under ``results``; returns each model's status ("installed", "already installed",
    "replaced"). Every conflict is found before anything is written."""
    results = Path(results)
    states = {m: _installed_state(mz, m, results) for m in mz.models}
    conflicts = [f"{m.dataset}/{m.identifier}: {s}" for m, s in states.items() if s not in (None, "same")]
    in_models = tuple(m.prefix for m in mz.models)
    others = [n for n in mz.files if not n.startswith(in_models)]  # e.g. ensembles/, inference_information.json
    conflicts += [f"{results / n} differs from the zip's" for n in others
                  if (results / n).exists() and not _same_file(results / n, mz.files[n])]
    if conflicts and not replace:
        raise ValueError(f"{mz.path}: a different model of the same name is already installed in {results}:\n  "
                         + "\n  ".join(conflicts) + "\npass --replace-model to overwrite it, or use another "
                         "nnUNet_results")
    status = {}
    with zipfile.ZipFile(mz.path) as zf:
        for m, state in states.items():
            if state == "same":
                status[m] = "already installed"
                continue
            target = results / m.dataset / m.identifier
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = target.parent / f".{m.identifier}.installing-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            try:
                for name, info in mz.files.items():
                    if name.startswith(m.prefix):
                        _extract(zf, info, staging / name[len(m.prefix):])
            except BaseException:  # a full disk, an interrupt: no half model left behind
                shutil.rmtree(staging, ignore_errors=True)
                raise
            old = target.parent / f".{m.identifier}.replaced-{os.getpid()}"
            if target.exists():
                os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
            status[m] = "installed" if state is None else "replaced"
        for name in others:
            if not _same_file(results / name, mz.files[name]):
                from nnunet_iph.imageio import atomic_path

                with atomic_path(results / name) as tmp:
                    _extract(zf, mz.files[name], tmp)
    return status


def _extract(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zf.open(info) as src, dest.open("wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)


# --------------------------------------------------------------------------- choosing

def choose_models(models: Sequence[ZipModel], pipeline: str, trainer: str | None = None,
                  plans: str | None = None, configuration: str | None = None) -> list[ZipModel]:
    """The models of the zip(s) ``pipeline`` runs: one for single/cascade (the fine stage), every
    matching one for ensemble/planes. ``trainer``/``plans``/``configuration`` (None: not given)
    narrow the choice; for planes ``plans`` is the prefix of the per-plane plans."""
    def plans_match(m: ZipModel) -> bool:
        return m.plans_name == plans or (pipeline == "planes" and m.plans_name.startswith(f"{plans}_"))

    held = ", ".join(m.label for m in models)
    chosen = [m for m in models if (trainer is None or m.trainer == trainer)
              and (plans is None or plans_match(m)) and (configuration is None or m.configuration == configuration)]
    if not chosen:
        given = " ".join(f"{flag} {v}" for flag, v in (("-tr", trainer), ("-p", plans), ("-c", configuration)) if v)
        raise ValueError(f"no model of the zip(s) matches {given}; they hold: {held}")
    if pipeline == "cascade":
        chosen = [m for m in chosen if m.previous_stage is not None]
        if not chosen:
            raise ValueError(f"no cascade fine stage (a configuration with previous_stage) among: {held}")
    if pipeline in ("single", "cascade") and len(chosen) > 1:
        raise ValueError(f"the zip(s) hold several models: {', '.join(m.label for m in chosen)}; choose one with "
                         "-tr TRAINER -p PLANS -c CONFIGURATION")
    return chosen


def check_trainer_available(model: ZipModel) -> None:
    """The model's trainer class must be importable where it predicts: nnU-Net looks it up by name."""
    import nnunet_iph.trainers as trainers

    if hasattr(trainers, model.trainer):
        return
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net narrates its search
            recursive_find_trainer_class_by_name(model.trainer)
    except RuntimeError:
        raise ValueError(f"{model.zip_path}: trainer {model.trainer!r} of {model.identifier} is neither nnU-Net's, "
                         "nnunet-iph's nor in $nnUNet_extTrainer; install the package that defines it (the zip "
                         "holds weights, not code)") from None


def models_from_zips(zips: Iterable[str | os.PathLike], pipeline: str, trainer: str | None = None,
                     plans: str | None = None, configuration: str | None = None,
                     replace: bool = False) -> list[Path]:
    """Install every zip into ``$nnUNet_results`` and return the model folders ``pipeline`` uses."""
    from nnunet_iph.planning.common import _env_dir

    results = _env_dir("nnUNet_results")
    inspected = [inspect_zip(z) for z in zips]
    seen: dict[tuple[str, str], Path] = {}
    for mz in inspected:
        for m in mz.models:
            other = seen.setdefault((m.dataset, m.identifier), mz.path)
            if other != mz.path:
                raise ValueError(f"{m.dataset}/{m.identifier} is in both {other} and {mz.path}; give one of them")
    chosen = choose_models([m for mz in inspected for m in mz.models], pipeline, trainer, plans, configuration)
    for m in chosen:
        check_trainer_available(m)
        if m.trained_with is not None and m.trained_with != __version__:
            print(f"warning: {m.identifier} was trained with nnunet-iph {m.trained_with}, this is {__version__}; "
                  "if a trainer changed in between, its predictions may differ", file=sys.stderr)
    for mz in inspected:
        for m, state in install(mz, results, replace).items():
            print(f"{m.dataset}/{m.identifier}: {state} in {results} (from {mz.path})")
    return [results / m.dataset / m.identifier for m in chosen]
