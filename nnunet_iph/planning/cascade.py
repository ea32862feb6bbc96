"""Coarse-to-fine cascade plans: a 2D coarse stage feeding a fine 3D (and/or 2D) stage.

nnU-Net's own cascade machinery does the work: the coarse configuration names its
``next_stage``(s); each fine configuration names its ``previous_stage`` and takes the image plus
the coarse mask (one-hot) as input. During its final validation the coarse trainer writes its
predictions, resampled to the fine stage's preprocessed geometry, to
``<results>/<CoarseTrainer>__<plans>__<coarse>/predicted_next_stage/<fine>/`` -- but only when
the fine configuration has been preprocessed, and it merely logs when it is not. The fine
trainers in :mod:`nnunet_iph.trainers.cascade` read that folder (nnU-Net would look in a folder
named after the *fine* trainer) and :func:`check_coarse_outputs` stops them with a clear message
instead of a crash deep inside the data loader.

Layout written by :func:`write_cascade_plans` (a separate plans file, ``nnUNetPlans_cascade`` by
default, copied from the source plans so the coarse/fine configurations reuse its preprocessed
data)::

    "2d_coarse": {"inherits_from": "2d", "next_stage": ["3d_fine"]}
    "3d_fine":   {"inherits_from": "3d_fullres", "previous_stage": "2d_coarse",
                  "previous_stage_trainer": "<coarse trainer, optional>"}
"""

from __future__ import annotations

import json
import os
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from nnunet_iph.planning.common import (load_plans, load_splits, plans_path, preprocessed_complete,
                                        preprocessed_dir, results_dir, save_plans)

CASCADE_KEY = "nnunet_iph_cascade"
PREVIOUS_TRAINER_KEY = "previous_stage_trainer"
COARSE_TRAINER_ENV = "NNUNET_IPH_COARSE_TRAINER"
PROBABILITY_FOLDER = "predicted_next_stage_probabilities"


@dataclass(frozen=True)
class CascadeLayout:
    plans: str = "nnUNetPlans_cascade"
    coarse: str = "2d_coarse"
    fine_3d: str | None = "3d_fine"
    fine_2d: str | None = None

    @property
    def fine(self) -> list[str]:
        return [c for c in (self.fine_3d, self.fine_2d) if c]


def write_cascade_plans(dataset: int | str, layout: CascadeLayout = CascadeLayout(),
                        source_plans: str = "nnUNetPlans", coarse_from: str = "2d", fine_3d_from: str = "3d_fullres",
                        fine_2d_from: str = "2d", coarse_trainer: str | None = None,
                        coarse_architecture: dict | None = None, coarse_arch_kwargs: dict | None = None) -> Path:
    """Write (or update) the cascade plans file from ``source_plans``; return its path.

    ``coarse_trainer`` (e.g. ``nnUNetTrainerDenseNetCoarse_20ep_25it``) is recorded in the fine
    configurations so the fine trainer finds the coarse outputs without guessing;
    ``coarse_architecture`` replaces the coarse configuration's ``architecture`` block (for
    coarse networks built from plans rather than by their trainer).
    """
    if not layout.fine:
        raise ValueError("a cascade needs at least one fine configuration (fine_3d and/or fine_2d)")
    source = load_plans(dataset, source_plans)
    needed = {layout.coarse: coarse_from, **({layout.fine_3d: fine_3d_from} if layout.fine_3d else {}),
              **({layout.fine_2d: fine_2d_from} if layout.fine_2d else {})}
    missing = sorted({v for v in needed.values() if v not in source["configurations"]})
    if missing:
        raise ValueError(f"{plans_path(dataset, source_plans)} has no configuration(s) {missing} "
                         f"(available: {sorted(source['configurations'])}); a 2D-only dataset has no 3d_fullres: "
                         "use a 2D fine stage instead")
    out_path = plans_path(dataset, layout.plans)
    plans = json.loads(out_path.read_text(encoding="utf-8")) if out_path.is_file() else deepcopy(source)
    if out_path.is_file() and plans.get("transpose_forward") != source["transpose_forward"]:
        raise ValueError(f"{out_path}: transpose differs from {source_plans}; delete it or pick another "
                         "--cascade-plans")
    plans["plans_name"] = layout.plans
    for name, cfg in source["configurations"].items():  # the inherited configurations, kept in sync
        if name not in needed:
            plans["configurations"][name] = deepcopy(cfg)
    coarse = {"inherits_from": coarse_from, "next_stage": layout.fine}
    if coarse_architecture is not None or coarse_arch_kwargs:
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        arch = deepcopy(coarse_architecture if coarse_architecture is not None
                        else PlansManager(source).get_configuration(coarse_from).configuration["architecture"])
        arch.setdefault("arch_kwargs", {}).update(coarse_arch_kwargs or {})
        coarse["architecture"] = arch
    plans["configurations"][layout.coarse] = coarse
    for fine, parent in ((layout.fine_3d, fine_3d_from), (layout.fine_2d, fine_2d_from)):
        if fine:
            cfg = {"inherits_from": parent, "previous_stage": layout.coarse}
            if coarse_trainer:
                cfg[PREVIOUS_TRAINER_KEY] = coarse_trainer
            plans["configurations"][fine] = cfg
    plans[CASCADE_KEY] = {"source_plans": source_plans, "coarse": layout.coarse, "fine": layout.fine,
                          "coarse_trainer": coarse_trainer}
    return save_plans(plans, out_path)


# --------------------------------------------------------------------------- readiness checks

def coarse_model_folder(dataset: int | str, plans: str, coarse_configuration: str, coarse_trainer: str) -> Path:
    return results_dir(dataset) / f"{coarse_trainer}__{plans}__{coarse_configuration}"


def resolve_coarse_trainer(dataset: int | str, plans: dict, fine_configuration: str,
                           fine_trainer: str | None = None) -> str:
    """Which trainer trained the coarse stage of ``fine_configuration``.

    Order: ``$NNUNET_IPH_COARSE_TRAINER``; ``previous_stage_trainer`` in the plans; else the
    only results folder ``*__<plans>__<coarse>`` with outputs for this fine configuration.
    """
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    cfg = PlansManager(plans).get_configuration(fine_configuration)
    coarse = cfg.previous_stage_name
    if coarse is None:
        raise ValueError(f"configuration {fine_configuration!r} of plans {plans['plans_name']!r} has no "
                         "previous_stage: it is not the fine stage of a cascade")
    explicit = os.environ.get(COARSE_TRAINER_ENV) or cfg.configuration.get(PREVIOUS_TRAINER_KEY)
    if explicit:
        return explicit
    suffix = f"__{plans['plans_name']}__{coarse}"
    root = results_dir(dataset)
    candidates = sorted(p.name[:-len(suffix)] for p in root.glob(f"*{suffix}")
                        if (p / "predicted_next_stage" / fine_configuration).is_dir()
                        and p.name[:-len(suffix)] != fine_trainer)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise FileNotFoundError(
            f"{root}: no trained coarse stage '*{suffix}' with predictions for {fine_configuration!r}. Train "
            f"all folds of the coarse configuration first (nnUNetv2_train D {coarse} FOLD -tr COARSE_TRAINER "
            f"-p {plans['plans_name']}), after preprocessing {fine_configuration!r}")
    raise ValueError(f"several coarse trainers have outputs for {fine_configuration!r}: {candidates}; choose one "
                     f"with {COARSE_TRAINER_ENV}=NAME or `nnunet-iph plan --coarse-trainer NAME`")


def check_fine_preprocessed(dataset: int | str, plans: dict, fine_configuration: str,
                            cases: Iterable[str]) -> Path:
    """The fine stage's preprocessed folder; ``FileNotFoundError`` when cases are missing.

    Must hold *before* the coarse stage validates, else nnU-Net skips the next-stage export.
    """
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    folder = preprocessed_dir(dataset) / PlansManager(plans).get_configuration(fine_configuration).data_identifier
    cases = list(cases)
    if not preprocessed_complete(folder, cases):
        missing = [c for c in cases if not (folder / f"{c}.pkl").is_file()]
        raise FileNotFoundError(
            f"{folder}: fine configuration {fine_configuration!r} is not preprocessed ({len(missing)} of "
            f"{len(cases)} cases missing, e.g. {missing[:3]}). Run `nnunet-iph plan -d {dataset} --cascade` "
            f"(or nnUNetv2_preprocess -d D -p {plans['plans_name']} -c {fine_configuration}) BEFORE the coarse "
            "stage's validation; then re-run the coarse validation (nnUNetv2_train ... --val)")
    return folder


def check_coarse_outputs(dataset: int | str, plans: dict, fine_configuration: str, coarse_trainer: str,
                         cases: Iterable[str], kind: str = "argmax") -> Path:
    """Folder with the coarse stage's output for every case in ``cases``; clear errors otherwise.

    ``kind='argmax'``: nnU-Net's ``predicted_next_stage`` label maps. ``kind='probabilities'``:
    the coarse validation ``.npz`` files are needed instead (train the coarse stage with ``--npz``);
    the folder returned is where the converted maps go (see :func:`export_coarse_probabilities`).
    """
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    cfg = PlansManager(plans).get_configuration(fine_configuration)
    coarse = cfg.previous_stage_name
    cases = sorted(cases)
    model = coarse_model_folder(dataset, plans["plans_name"], coarse, coarse_trainer)
    hint_train = (f"nnUNetv2_train {dataset} {coarse} FOLD -tr {coarse_trainer} -p {plans['plans_name']}"
                  + (" --npz" if kind == "probabilities" else ""))
    if not model.is_dir():
        raise FileNotFoundError(f"{model}: coarse stage not trained. Train all its folds first: {hint_train}")
    if kind == "argmax":
        folder = model / "predicted_next_stage" / fine_configuration
        have = {p.name.split(".")[0] for p in folder.glob("*")} if folder.is_dir() else set()
    elif kind == "probabilities":
        folder = model / PROBABILITY_FOLDER / fine_configuration
        have = {p.stem for f in model.glob("fold_*") for p in (f / "validation").glob("*.npz")}
    else:
        raise ValueError(f"kind must be 'argmax' or 'probabilities', got {kind!r}")
    missing = [c for c in cases if c not in have]
    if not missing:
        return folder
    check_fine_preprocessed(dataset, plans, fine_configuration, cases)
    by_fold = _folds_of(dataset, missing)
    lines = []
    for fold, fold_cases in sorted(by_fold.items(), key=lambda kv: str(kv[0])):
        fold_dir = model / f"fold_{fold}"
        if fold is None:
            lines.append(f"  {len(fold_cases)} case(s) in no validation fold of splits_final.json: {fold_cases[:5]}")
        elif not (fold_dir / "checkpoint_final.pth").is_file():
            lines.append(f"  fold {fold}: not trained (no {fold_dir / 'checkpoint_final.pth'}): "
                         f"{hint_train.replace('FOLD', str(fold))}")
        elif kind == "probabilities":
            lines.append(f"  fold {fold}: trained but no validation .npz for {fold_cases[:5]}: rerun nnUNetv2_train "
                         f"{dataset} {coarse} {fold} -tr {coarse_trainer} -p {plans['plans_name']} --val --npz")
        else:
            lines.append(f"  fold {fold}: trained but its validation wrote no next-stage predictions for "
                         f"{fold_cases[:5]} (fine stage not preprocessed back then?): rerun nnUNetv2_train {dataset} "
                         f"{coarse} {fold} -tr {coarse_trainer} -p {plans['plans_name']} --val")
    raise FileNotFoundError(f"{folder}: coarse outputs missing for {len(missing)} of {len(cases)} case(s); the "
                            f"coarse stage must be trained on all folds:\n" + "\n".join(lines))


def _folds_of(dataset: int | str, cases: list[str]) -> dict[int | None, list[str]]:
    try:
        splits = load_splits(dataset)
    except FileNotFoundError:
        return {None: cases}
    out: dict[int | None, list[str]] = {}
    for c in cases:
        fold = next((i for i, s in enumerate(splits) if c in s["val"]), None)
        out.setdefault(fold, []).append(c)
    return out


# --------------------------------------------------------------------------- coarse probabilities

PROBABILITY_LEVELS = 10  # quantisation of the coarse probability channel (0..10 -> 0.0..1.0)


def probabilities_to_fine_grid(probabilities, properties: dict, plans: dict, fine_configuration: str,
                               target_shape) -> np.ndarray:
    """Coarse foreground probability (original image geometry, ``(C, *shape)``) -> fine preprocessed grid.

    Same steps as nnU-Net's preprocessing of the image: transpose, crop to the nonzero bounding
    box, resample (linear) to the fine configuration's spacing/shape. Returns float32 ``(*target_shape)``
    of the summed foreground probability.
    """
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(plans)
    cm = pm.get_configuration(fine_configuration)
    probs = np.asarray(probabilities, dtype=np.float32)
    fg = probs[1:].sum(0, keepdims=True) if probs.shape[0] > 1 else probs
    fg = fg.transpose([0, *[i + 1 for i in pm.transpose_forward]])
    bbox = properties["bbox_used_for_cropping"]
    fg = fg[(slice(None), *[slice(lo, hi) for lo, hi in bbox])]
    spacing_t = [properties["spacing"][i] for i in pm.transpose_forward]
    target_spacing = list(cm.spacing) if len(cm.spacing) == 3 else [spacing_t[0], *cm.spacing]
    if tuple(fg.shape[1:]) != tuple(target_shape):
        fg = cm.resampling_fn_probabilities(fg, tuple(int(s) for s in target_shape), spacing_t, target_spacing)
        fg = np.asarray(fg)
    return np.clip(fg[0], 0.0, 1.0).astype(np.float32)


def quantize(prob, levels: int = PROBABILITY_LEVELS) -> np.ndarray:
    return np.rint(np.clip(prob, 0, 1) * levels).astype(np.uint8)


def export_coarse_probabilities(dataset: int | str, plans: dict, fine_configuration: str, coarse_trainer: str,
                                cases: Iterable[str], overwrite: bool = False) -> Path:
    """Convert the coarse stage's validation ``.npz`` into the fine grid, quantised, one file per case.

    Stored like nnU-Net's next-stage segmentations (blosc2 ``<case>.b2nd``, values
    ``0..PROBABILITY_LEVELS``) so nnU-Net's data loader and augmentation handle them unchanged.
    """
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    cases = list(cases)
    folder = check_coarse_outputs(dataset, plans, fine_configuration, coarse_trainer, cases, kind="probabilities")
    cfg = PlansManager(plans).get_configuration(fine_configuration)
    model = coarse_model_folder(dataset, plans["plans_name"], cfg.previous_stage_name, coarse_trainer)
    npz = {p.stem: p for f in sorted(model.glob("fold_*")) for p in (f / "validation").glob("*.npz")}
    pre = check_fine_preprocessed(dataset, plans, fine_configuration, cases)
    dataset_class = infer_dataset_class(str(pre))
    folder.mkdir(parents=True, exist_ok=True)
    for case in cases:
        if not overwrite and any((folder / f"{case}{e}").is_file() for e in (".b2nd", ".npz")):
            continue
        data, _, _, props = dataset_class(str(pre), [case]).load_case(case)
        probs = np.load(npz[case])["probabilities"]
        fine = probabilities_to_fine_grid(probs, props, plans, fine_configuration, data.shape[1:])
        _save_seg_like(quantize(fine), folder / case, cfg.patch_size, dataset_class)
    return folder


def _save_seg_like(seg, output_truncated: Path, patch_size, dataset_class) -> None:
    """Write like nnU-Net's next-stage export, under a temporary name renamed into place."""
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2, comp_blosc2_params

    tmp = output_truncated.parent / f".{output_truncated.name}.tmp"
    if dataset_class is nnUNetDatasetBlosc2:
        block, chunk = comp_blosc2_params((1, *seg.shape), tuple(patch_size), bytes_per_pixel=1)
        nnUNetDatasetBlosc2.save_seg(seg, str(tmp), chunks_seg=[int(i) for i in chunk[1:]],
                                     blocks_seg=[int(i) for i in block[1:]])
        ending = ".b2nd"
    else:
        dataset_class.save_seg(seg, str(tmp))
        ending = ".npz"
    os.replace(f"{tmp}{ending}", f"{output_truncated}{ending}")
