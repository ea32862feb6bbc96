"""Average the softmax of several nnU-Net models: 2.5D (three planes) or any set of models.

nnU-Net exports probabilities (``.npz`` + ``.pkl``, from ``--npz`` / ``--save_probabilities``) in
the original image geometry, whatever the plans' transpose, so models trained along different
planes, or with different architectures, can be averaged voxel by voxel. What this module adds
over ``nnUNetv2_ensemble`` / ``ensemble_crossvalidations``: checks with clear messages (missing
folds, missing ``.npz``, a missing plane, plans that do not belong together, arrays of different
shape), the cross-validation of *any number* of models with one ``summary.json``, and in-process
averaging (no process pool: cheap on CPU).
"""

from __future__ import annotations

import hashlib

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from nnunet_iph.imageio import atomic_path, write_json
from nnunet_iph.model_names import ModelIdentifier
from nnunet_iph.planning.common import load_splits, preprocessed_dir, results_dir
from nnunet_iph.planning import PLANES


@dataclass(frozen=True)
class ModelRef(ModelIdentifier):
    """A trained model folder ``<results>/<Dataset>/<Trainer>__<Plans>__<configuration>``."""

    folder: Path

    @classmethod
    def resolve(cls, spec: str | Path, dataset: int | str | None = None) -> "ModelRef":
        """A folder path, or ``TRAINER__PLANS__CONFIG`` inside ``dataset``'s results."""
        path = Path(spec)
        if path.is_dir() or path.is_absolute() or dataset is None:
            if len(path.name.split("__")) != 3:
                raise ValueError(f"{spec}: expected a model folder named TRAINER__PLANS__CONFIGURATION")
            return cls(path)
        if len(str(spec).split("__")) != 3:
            raise ValueError(f"model {spec!r}: expected TRAINER__PLANS__CONFIGURATION or a model folder")
        return cls(results_dir(dataset) / str(spec))

    @property
    def identifier(self) -> str:
        return self.folder.name

    @property
    def dataset(self) -> str:
        return self.folder.parent.name

    def train_command(self, fold: int | str = "FOLD", extra: str = "--npz") -> str:
        return (f"nnUNetv2_train {self.dataset} {self.configuration} {fold} -tr {self.trainer} "
                f"-p {self.plans_name} {extra}").strip()

    def _json(self, name: str) -> dict:
        path = self.folder / name
        if not path.is_file():
            if not self.folder.is_dir():
                raise FileNotFoundError(f"{self.folder}: model not trained (folder missing). Train it: "
                                        f"{self.train_command()}")
            raise FileNotFoundError(f"{path}: missing; is {self.folder} an nnU-Net model folder?")
        return json.loads(path.read_text(encoding="utf-8"))

    def plans(self) -> dict:
        return self._json("plans.json")

    def dataset_json(self) -> dict:
        return self._json("dataset.json")


def plane_models(dataset: int | str, trainer: str, plans_prefix: str = "nnUNetPlans", configuration: str = "2d",
                 planes: Sequence[str] = PLANES) -> list[ModelRef]:
    return [ModelRef(results_dir(dataset) / f"{trainer}__{plans_prefix}_{p}__{configuration}") for p in planes]


def check_members(models: Sequence[ModelRef], require_planes: bool = False) -> None:
    """Refuse model sets that cannot be averaged: missing, other datasets/labels, duplicate planes."""
    from nnunet_iph.planning.planes import plans_plane
    from nnunet_iph.planning.orientation import plane_transpose

    if len(models) < 2:
        raise ValueError(f"an ensemble needs at least 2 models, got {len(models)}")
    if len({m.folder.resolve() for m in models}) != len(models):
        raise ValueError(f"the same model is listed twice: {[m.identifier for m in models]}")
    missing = [m for m in models if not m.folder.is_dir()]
    if missing:
        raise FileNotFoundError("model folder(s) missing -- train them first:\n" + "\n".join(
            f"  {m.folder}: {m.train_command()}" for m in missing))
    ref, ref_ds = models[0].plans(), models[0].dataset_json()
    for m in models[1:]:
        plans, ds = m.plans(), m.dataset_json()
        problems = []
        for key in ("labels", "file_ending", "channel_names", "regions_class_order"):
            if ds.get(key) != ref_ds.get(key):
                problems.append(f"dataset.json '{key}': {ds.get(key)!r} vs {ref_ds.get(key)!r}")
        if plans.get("image_reader_writer") != ref.get("image_reader_writer"):
            problems.append(f"image reader {plans.get('image_reader_writer')} vs {ref.get('image_reader_writer')} "
                            "(array axis order of the probabilities differs)")
        if problems:
            raise ValueError(f"mismatched plans: {m.folder} does not match {models[0].folder}:\n  " +
                             "\n  ".join(problems))
    if require_planes:
        planes = {}
        for m in models:
            plans = m.plans()
            plane = plans_plane(plans)
            if plane is None:
                raise ValueError(f"mismatched plans: {m.folder / 'plans.json'} is not a per-plane plan "
                                 "(write plans with `nnunet-iph plan --planes`)")
            mapping = plans["nnunet_iph_plane"]["array_axis_to_anatomical_axis"]
            if list(plans["transpose_forward"]) != plane_transpose(plane, mapping)[0]:
                raise ValueError(f"mismatched plans: {m.folder / 'plans.json'} says plane {plane!r} but its "
                                 f"transpose_forward is {plans['transpose_forward']}")
            if plane in planes:
                raise ValueError(f"mismatched plans: {planes[plane].identifier} and {m.identifier} both slice "
                                 f"along the {plane} plane")
            planes[plane] = m
        absent = [p for p in PLANES if p not in planes]
        if absent:
            raise FileNotFoundError(f"missing plane(s) {absent} for a 2.5D ensemble (have {sorted(planes)}); "
                                    "train a model on every plane")


def average_probabilities(files: Sequence[Path]) -> np.ndarray:
    """Mean of the ``probabilities`` arrays of ``files`` (float32); shapes must agree."""
    avg, shape0 = None, None
    for f in files:
        p = np.load(f)["probabilities"]
        if avg is None:
            avg, shape0 = p.astype(np.float32, copy=True), p.shape
        elif p.shape != shape0:
            raise ValueError(f"probability arrays do not line up: {files[0]} has shape {shape0}, {f} has "
                             f"{p.shape} (different images or plans?)")
        else:
            avg += p
    assert avg is not None
    avg /= len(files)
    return avg


def merge_case(files: Sequence[Path], output_truncated: Path, plans: dict, dataset_json: dict,
               save_probabilities: bool = False) -> Path:
    """Average one case's probabilities and write the label map (and optionally the mean probabilities)."""
    from batchgenerators.utilities.file_and_folder_operations import load_pickle, save_pickle
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(plans)
    label_manager = pm.get_label_manager(dataset_json)
    props = load_pickle(str(files[0])[:-4] + ".pkl")
    probs = average_probabilities(files)
    seg = label_manager.convert_probabilities_to_segmentation(probs)
    seg = seg.numpy() if hasattr(seg, "numpy") else np.asarray(seg)
    out = Path(f"{output_truncated}{dataset_json['file_ending']}")
    with atomic_path(out) as tmp:
        pm.image_reader_writer_class().write_seg(seg, str(tmp), props)
    if save_probabilities:
        with atomic_path(Path(f"{output_truncated}.npz")) as tmp:
            np.savez_compressed(tmp, probabilities=probs)
        save_pickle(props, f"{output_truncated}.pkl")
    return out


def _validation_files(models: Sequence[ModelRef], folds: Sequence[int | str]) -> dict[str, list[Path]]:
    """``{case: [npz of each model]}`` over the given folds; clear errors for anything missing."""
    per_model: list[dict[str, Path]] = []
    for m in models:
        files: dict[str, Path] = {}
        for f in folds:
            val = m.folder / f"fold_{f}" / "validation"
            if not val.is_dir():
                raise FileNotFoundError(f"{val}: fold {f} of {m.identifier} missing (not trained or not validated). "
                                        f"Train it: {m.train_command(f)}")
            npz = sorted(val.glob("*.npz"))
            if not npz:
                raise FileNotFoundError(f"{val}: no .npz probabilities. Re-run the validation with --npz: "
                                        f"{m.train_command(f, '--val --npz')}")
            for p in npz:
                if p.stem in files:
                    raise ValueError(f"case {p.stem} is validated in two folds of {m.identifier} "
                                     f"({files[p.stem].parent.parent.name}, fold_{f})")
                files[p.stem] = p
        per_model.append(files)
    all_cases = set().union(*per_model)
    for m, files in zip(models, per_model):
        lacking = sorted(all_cases - set(files))
        if lacking:
            raise FileNotFoundError(f"{m.folder}: no validation probabilities for {len(lacking)} case(s) the other "
                                    f"models have, e.g. {lacking[:5]} (different splits, or a fold validated "
                                    f"without --npz)")
    return {c: [files[c] for files in per_model] for c in sorted(all_cases)}


def default_folds(dataset: int | str, models: Sequence[ModelRef]) -> list[int]:
    try:
        return list(range(len(load_splits(dataset))))
    except FileNotFoundError:
        common = set.intersection(*({p.name[5:] for p in m.folder.glob("fold_*")} for m in models))
        return sorted(int(f) for f in common if f.isdigit())


MAX_NAME_BYTES = 255  # a file name's limit on Linux / macOS file systems


def ensemble_name(models: Sequence[ModelRef], folds: Sequence[int | str]) -> str:
    """``ensemble___<m1>___<m2>___..___<folds>`` (nnU-Net's naming), or, where that exceeds the file-name
    limit (three long plane-model names do), ``ensemble___<sha1 of it, 16 hex>___<folds>``: the members
    are then read from the folder's ``ensemble.json``."""
    fold_part = "_".join(str(f) for f in folds)
    full = "ensemble___" + "___".join(m.identifier for m in models) + "___" + fold_part
    if len(full.encode()) <= MAX_NAME_BYTES:
        return full
    return f"ensemble___{hashlib.sha1(full.encode()).hexdigest()[:16]}___{fold_part}"


def ensemble_crossvalidation(models: Sequence[ModelRef], output_folder: str | Path | None = None,
                             folds: Sequence[int | str] | None = None, require_planes: bool = False,
                             num_processes: int = 2, evaluate: bool = True) -> Path:
    """Average the members' cross-validation probabilities (all folds) into one folder + ``summary.json``.

    Default output: ``<results>/<Dataset>/ensembles/ensemble___<m1>___<m2>___..___<folds>``, next to
    what ``nnUNetv2_find_best_configuration`` writes for pairs.
    """
    check_members(models, require_planes)
    dataset = models[0].dataset
    folds = list(folds) if folds is not None else default_folds(dataset, models)
    if not folds:
        raise FileNotFoundError(f"no folds found for {[m.identifier for m in models]}")
    files = _validation_files(models, folds)
    out = Path(output_folder) if output_folder else results_dir(dataset) / "ensembles" / ensemble_name(models, folds)
    out.mkdir(parents=True, exist_ok=True)
    plans, dataset_json = models[0].plans(), models[0].dataset_json()
    for case, case_files in files.items():
        merge_case(case_files, out / case, plans, dataset_json)
    shutil.copy(models[0].folder / "plans.json", out / "plans.json")
    shutil.copy(models[0].folder / "dataset.json", out / "dataset.json")
    write_json({"members": [str(m.folder) for m in models], "folds": folds, "cases": sorted(files),
                "kind": "2.5D planes" if require_planes else "models"}, out / "ensemble.json")
    if evaluate:
        evaluate_folder(out, dataset, plans, dataset_json, num_processes)
    return out


def evaluate_folder(folder: Path, dataset: int | str, plans: dict, dataset_json: dict, num_processes: int = 2) -> dict:
    """nnU-Net's ``compute_metrics_on_folder`` against ``gt_segmentations`` -> ``folder/summary.json``."""
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(plans)
    lm = pm.get_label_manager(dataset_json)
    gt = preprocessed_dir(dataset) / "gt_segmentations"
    if not gt.is_dir():
        raise FileNotFoundError(f"{gt}: reference segmentations missing (made by preprocessing)")
    return compute_metrics_on_folder(str(gt), str(folder), str(folder / "summary.json"),
                                     pm.image_reader_writer_class(), dataset_json["file_ending"],
                                     lm.foreground_regions if lm.has_regions else lm.foreground_labels,
                                     lm.ignore_label, max(1, num_processes))


def member_cv_summaries(models: Sequence[ModelRef], folds: Sequence[int | str],
                        num_processes: int = 2) -> dict[str, float]:
    """Each member's own cross-validation Dice (nnU-Net's accumulate_cv_results), to report beside the ensemble."""
    from nnunetv2.evaluation.accumulate_cv_results import accumulate_cv_results

    out = {}
    for m in models:
        merged = m.folder / f"crossval_results_folds_{'_'.join(str(f) for f in folds)}"
        accumulate_cv_results(str(m.folder), str(merged), list(folds), max(1, num_processes), overwrite=True)
        out[m.identifier] = json.loads((merged / "summary.json").read_text(encoding="utf-8"))["foreground_mean"]["Dice"]
    return out


def ensemble_prediction_folders(folders: Sequence[str | Path], output_folder: str | Path,
                                save_probabilities: bool = False) -> list[Path]:
    """Average predictions of new images (folders written with ``--save_probabilities``)."""
    folders = [Path(f) for f in folders]
    if len(folders) < 2:
        raise ValueError(f"an ensemble needs at least 2 prediction folders, got {len(folders)}")
    cases_per = []
    for f in folders:
        if not f.is_dir():
            raise FileNotFoundError(f"{f}: prediction folder missing")
        cases = {p.stem for p in f.glob("*.npz")}
        if not cases:
            raise FileNotFoundError(f"{f}: no .npz probabilities; predict with --save_probabilities")
        for name in ("plans.json", "dataset.json"):
            if not (f / name).is_file():
                raise FileNotFoundError(f"{f / name}: missing (nnU-Net writes it next to its predictions)")
        cases_per.append(cases)
    models = [_PredictionFolder(f) for f in folders]
    check_members(models)  # type: ignore[arg-type]
    all_cases = set().union(*cases_per)
    for f, cases in zip(folders, cases_per):
        if cases != all_cases:
            raise FileNotFoundError(f"{f}: probabilities missing for {sorted(all_cases - cases)[:5]}")
    out = Path(output_folder)
    out.mkdir(parents=True, exist_ok=True)
    plans = json.loads((folders[0] / "plans.json").read_text(encoding="utf-8"))
    dataset_json = json.loads((folders[0] / "dataset.json").read_text(encoding="utf-8"))
    written = [merge_case([f / f"{c}.npz" for f in folders], out / c, plans, dataset_json, save_probabilities)
               for c in sorted(all_cases)]
    shutil.copy(folders[0] / "dataset.json", out / "dataset.json")
    shutil.copy(folders[0] / "plans.json", out / "plans.json")
    return written


class _PredictionFolder(ModelRef):
    """A prediction folder seen through :class:`ModelRef`'s checks (plans.json + dataset.json inside)."""

    @property
    def identifier(self) -> str:
        return str(self.folder)

    def train_command(self, fold: int | str = "FOLD", extra: str = "") -> str:
        return f"predict into {self.folder} with --save_probabilities"

