"""``nnunet-iph predict``: a folder of CT files -> masks + per-case hemorrhage volumes (mL).

Pipelines, all on top of nnU-Net's own predictor (the code behind ``nnUNetv2_predict``, run
in-process so models are loaded once and nothing is re-imported per step):

- ``single``: one model (its folds averaged, as nnU-Net does);
- ``ensemble``: several models, softmax averaged case by case in memory (same arithmetic as
  :mod:`nnunet_iph.ensembling`, without writing and re-reading ``.npz``);
- ``planes``: the 2.5D ensemble -- one 2D model per plane (checked: all three planes present);
- ``cascade``: coarse stage -> fine stage (``-prev_stage_predictions`` with the coarse masks, or
  the coarse probabilities for ``nnUNetTrainerCascadeFineProb``).

Input files may follow nnU-Net's naming (``CASE_0000.nii.gz``) or be plain (``CASE.nii.gz``, one
channel); each sub-folder is a DICOM case (its series chosen by :mod:`nnunet_iph.dicom.series`,
staged as NIfTI in a private temporary folder, masks written on the series' grid plus a DICOM-SEG
``<out>/<CASE>.seg.dcm``). Every input is read (:func:`nnunet_iph.imageio.read_image`) and
checked before nnU-Net starts, so a bad file stops the run with its name before anything is
written. A model whose dataset.json records input steps (skull stripping, CT channel copies: see
:mod:`nnunet_iph.inference.model_inputs`) gets them applied to each input CT right after these
checks. Output: ``<out>/<CASE>.nii.gz``, ``<out>/volumes.csv``, ``<out>/pipeline.json`` (members,
folds, DICOM series, timings, model input steps) and, with ``keep_members``, each member's output
under ``<out>/members/``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from nnunet_iph.ensembling.ensemble import ModelRef, check_members
from nnunet_iph.imageio import write_json
from nnunet_iph.inference.model_inputs import InputSteps, model_steps, prepare_cases
from nnunet_iph.inference.outputs import write_prediction_outputs
from nnunet_iph.planning.cascade import COARSE_TRAINER_ENV, PREVIOUS_TRAINER_KEY, PROBABILITY_LEVELS

PIPELINES = ("single", "ensemble", "planes", "cascade")
BRAIN_DIR = "brain"  # intracranial masks of the inputs (--brain-mask)


@dataclass
class PredictSettings:
    device: str = "cpu"
    folds: tuple[int | str, ...] | None = None  # None: every fold with a checkpoint
    checkpoint: str = "checkpoint_final.pth"
    tta: bool = True  # nnU-Net's mirroring test-time augmentation
    step_size: float = 0.5
    npp: int = 0  # 0 and 0: nnU-Net's sequential predictor (no worker processes)
    nps: int = 0
    save_probabilities: bool = False
    keep_members: bool = False  # keep each member's output under <out>/members/
    verbose: bool = False
    dicom_irregular: str = "error"  # gantry tilt / missing slices in a DICOM case: error | keep | resample
    series_uids: tuple[str, ...] = ()  # DICOM: segment these series (one per case folder) instead of the rule
    dicom_seg: bool = True  # DICOM cases: also write <CASE>.seg.dcm
    qc: bool = True  # OUT/qc/<case>.png and their links in OUT/index.html
    brain_mask: bool = False  # intracranial masks of the inputs -> OUT/brain/, intracranial_ml in volumes.csv
    restrict_to_brain: bool = False  # masks (SEGs, volumes) without voxels outside the intracranial mask
    patients: str | None = None  # case -> patient / time map -> OUT/patients.csv (hematoma expansion)
    brain_crop: float | None = None  # margin (mm): segment a crop around the intracranial mask (inference/crop.py)


@dataclass
class Timing:
    """Wall-clock seconds. ``network``: inside nnU-Net's sliding-window inference (forward passes,
    mirroring, Gaussian weighting); ``nnunet``: inside nnU-Net calls (model loading, preprocessing,
    inference, export; includes ``network``); the rest of ``total`` is this package's own work."""

    total_s: float = 0.0
    nnunet_s: float = 0.0
    network_s: float = 0.0
    cases: int = 0
    stages: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        total = max(self.total_s, 1e-9)
        return {"cases": self.cases, "total_s": round(self.total_s, 3),
                "per_case_s": round(self.total_s / max(self.cases, 1), 3),
                "network_s": round(self.network_s, 3), "nnunet_s": round(self.nnunet_s, 3),
                "outside_network_share": round((self.total_s - self.network_s) / total, 4),
                "own_overhead_share": round((self.total_s - self.nnunet_s) / total, 4)}


# --------------------------------------------------------------------------- inputs

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")


def list_input_cases(input_folder: str | os.PathLike, file_ending: str, n_channels: int) -> dict[str, list[str]]:
    """``{case: [channel files]}``: nnU-Net naming (``CASE_0000``) or one plain file per case."""
    folder = Path(input_folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: input folder not found")
    files = sorted(p for p in folder.iterdir() if p.name.endswith(file_ending) and not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"{folder}: no {file_ending} files")
    stems = [p.name[:-len(file_ending)] for p in files]
    matches = [_CHANNEL.match(s) for s in stems]
    if all(matches):
        cases: dict[str, dict[int, str]] = {}
        for p, m in zip(files, matches):
            cases.setdefault(m["case"], {})[int(m["ch"])] = str(p)
        bad = {c: sorted(ch) for c, ch in cases.items() if sorted(ch) != list(range(n_channels))}
        if bad:
            c, ch = next(iter(bad.items()))
            raise ValueError(f"{folder}: case {c} has channels {ch}, the model needs {list(range(n_channels))} "
                             f"({len(bad)} case(s) affected)")
        return {c: [ch[i] for i in range(n_channels)] for c, ch in sorted(cases.items())}
    if n_channels != 1:
        raise ValueError(f"{folder}: the model needs {n_channels} channels per case; name the files "
                         f"CASE_0000{file_ending} ... CASE_{n_channels - 1:04d}{file_ending}")
    if any(matches):
        raise ValueError(f"{folder}: mixes nnU-Net names (CASE_0000{file_ending}) and plain names; use one style")
    return {s: [str(p)] for s, p in zip(stems, files)}


def validate_inputs(cases: dict[str, list[str]]) -> None:
    """Read every input through the one reader; refuse what nnU-Net would choke on or misread."""
    from nnunet_iph.imageio import InputError, read_image

    for case, files in cases.items():
        for f in files:
            img = read_image(f, "input image")
            if img.GetNumberOfComponentsPerPixel() != 1:
                raise InputError(f"input image {f}: {img.GetNumberOfComponentsPerPixel()} components per pixel "
                                 f"(RGB / vector image); expected a grey-value CT volume")
            if img.GetDimension() != 3:
                raise InputError(f"input image {f}: {img.GetDimension()}D image (size "
                                 f"{'x'.join(map(str, img.GetSize()))}); expected a 3D CT volume")


def gather_inputs(input_folder: str | os.PathLike, file_ending: str, n_channels: int, staging: Path,
                  settings: PredictSettings, timing: Timing,
                  output_folder: Path | None = None) -> tuple[dict[str, list[str]], list]:
    """Image files and DICOM case folders of ``input_folder`` -> ``{case: [channel files]}`` (DICOM cases
    staged under ``staging``) and the DICOM cases; every input read and checked. An output folder
    inside the input folder is not a case."""
    from nnunet_iph.dicom.cases import check_requested_uids, is_case_folder, stage_case
    from nnunet_iph.dicom.series import holds_dicom

    folder = Path(input_folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: input folder not found")
    t = time.perf_counter()
    has_files = any(p.name.endswith(file_ending) and not p.name.startswith(".") and p.is_file()
                    for p in folder.iterdir())
    skip = output_folder.resolve() if output_folder is not None else None
    sub = sorted(p for p in folder.iterdir() if is_case_folder(p) and p.resolve() != skip)
    if not has_files and not sub and holds_dicom(folder):
        raise ValueError(f"{folder}: holds DICOM files itself; -i takes a folder of cases: put each case's "
                         f"series in its own folder (IN/CASE/...)")
    if not has_files and not sub:
        raise FileNotFoundError(f"{folder}: no usable input: no {file_ending} files and no case folders "
                                f"holding a DICOM series")
    cases = list_input_cases(folder, file_ending, n_channels) if has_files else {}
    validate_inputs(cases)
    timing.stages["validate_inputs"] = time.perf_counter() - t
    if sub and n_channels != 1:
        raise ValueError(f"{folder}: DICOM case folders give one channel; the model needs {n_channels}")
    t = time.perf_counter()
    uids = frozenset(settings.series_uids)
    dicom_cases = []
    for p in sub:
        if p.name in cases:
            raise ValueError(f"{folder}: case {p.name} is both a file and a DICOM folder")
        dicom_cases.append(stage_case(p.name, p, staging, file_ending, settings.dicom_irregular, uids))
        cases[p.name] = [str(dicom_cases[-1].staged)]
    check_requested_uids(dicom_cases, uids)
    if dicom_cases:
        timing.stages["dicom_read_stage"] = time.perf_counter() - t
    return dict(sorted(cases.items())), dicom_cases


def finish_dicom_cases(dicom_cases: list, out: Path, ds: dict, settings: PredictSettings,
                       timing: Timing) -> dict[str, dict]:
    """Masks of DICOM cases on their series' grid, DICOM-SEGs; the pipeline.json entry per case."""
    from nnunet_iph.dicom.cases import finish_case

    t = time.perf_counter()
    info = {}
    for case in dicom_cases:
        seg = out / f"{case.name}.seg.dcm" if settings.dicom_seg else None
        seg = finish_case(case, out / f"{case.name}{ds['file_ending']}", ds.get("labels"), seg)
        info[case.name] = case.summary(seg)
    if dicom_cases:
        timing.stages["dicom_outputs"] = time.perf_counter() - t
    return info


def available_folds(model: ModelRef, folds: Sequence[int | str] | None, checkpoint: str) -> tuple[int | str, ...]:
    if folds is None:
        found = sorted((p.name[5:] for p in model.folder.glob("fold_*") if (p / checkpoint).is_file()),
                       key=lambda f: (not f.isdigit(), int(f) if f.isdigit() else 0, f))
        if not found:
            raise FileNotFoundError(f"{model.folder}: no fold with {checkpoint}; train it: {model.train_command()}")
        return tuple(int(f) if f.isdigit() else f for f in found)
    missing = [f for f in folds if not (model.folder / f"fold_{f}" / checkpoint).is_file()]
    if missing:
        raise FileNotFoundError(f"{model.folder}: fold(s) {missing} have no {checkpoint}; train them: "
                                f"{model.train_command(missing[0], '')}")
    return tuple(folds)


def _staging_ending(file_ending: str) -> str:
    """Uncompressed NIfTI for files read once, right away (gzip would cost more than it saves)."""
    return ".nii" if file_ending in (".nii.gz", ".nii") else file_ending


# --------------------------------------------------------------------------- running one model

class _ModelRunner:
    """One nnU-Net predictor for one model folder, timed."""

    def __init__(self, model: ModelRef, settings: PredictSettings, timing: Timing):
        self.model, self.settings, self.timing = model, settings, timing
        self.folds = available_folds(model, settings.folds, settings.checkpoint)
        t = time.perf_counter()  # nnU-Net's share: importing it, loading the model
        import torch
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        self.predictor = nnUNetPredictor(tile_step_size=settings.step_size, use_gaussian=True,
                                         use_mirroring=settings.tta, perform_everything_on_device=True,
                                         device=torch.device(settings.device), verbose=settings.verbose,
                                         verbose_preprocessing=False, allow_tqdm=False)
        self.predictor.initialize_from_trained_model_folder(str(model.folder), self.folds, settings.checkpoint)
        timing.nnunet_s += time.perf_counter() - t
        inner = self.predictor.predict_logits_from_preprocessed_data

        def timed(data):
            t0 = time.perf_counter()
            try:
                return inner(data)
            finally:
                timing.network_s += time.perf_counter() - t0

        self.predictor.predict_logits_from_preprocessed_data = timed
        self._preprocessor = None

    def run(self, cases: dict[str, list[str]], out_dir: Path, save_probabilities: bool,
            prev_stage_folder: Path | None = None) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        lists = [cases[c] for c in cases]
        outputs = [str(out_dir / c) for c in cases]
        s = self.settings
        t = time.perf_counter()
        prev = str(prev_stage_folder) if prev_stage_folder is not None else None
        if s.npp == 0 and s.nps == 0:
            self.predictor.predict_from_files_sequential(lists, outputs, save_probabilities=save_probabilities,
                                                         overwrite=True, folder_with_segs_from_prev_stage=prev)
        else:
            self.predictor.predict_from_files(lists, outputs, save_probabilities=save_probabilities, overwrite=True,
                                              num_processes_preprocessing=max(1, s.npp),
                                              num_processes_segmentation_export=max(1, s.nps),
                                              folder_with_segs_from_prev_stage=prev)
        self.timing.nnunet_s += time.perf_counter() - t
        return out_dir

    def predict_probabilities(self, files: list[str]) -> tuple[np.ndarray, dict]:
        """One case -> class probabilities in the original image geometry (nnU-Net's own steps, no files)."""
        import torch
        from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

        p = self.predictor
        t = time.perf_counter()
        if self._preprocessor is None:
            self._preprocessor = p.configuration_manager.preprocessor_class(verbose=False)
        data, _, props = self._preprocessor.run_case(files, None, p.plans_manager, p.configuration_manager,
                                                     p.dataset_json)
        logits = p.predict_logits_from_preprocessed_data(torch.from_numpy(data)).cpu()
        _, probs = convert_predicted_logits_to_segmentation_with_correct_shape(
            logits, p.plans_manager, p.configuration_manager, p.label_manager, props, return_probabilities=True)
        self.timing.nnunet_s += time.perf_counter() - t
        return probs, props

    def run_with_coarse_probabilities(self, cases: dict[str, list[str]], out_dir: Path, coarse_dir: Path,
                                      save_probabilities: bool) -> Path:
        """Fine stage whose extra channel is the coarse foreground probability (quantised as in training)."""
        import torch
        from nnunetv2.inference.export_prediction import export_prediction_from_logits

        from nnunet_iph.planning.cascade import probabilities_to_fine_grid, quantize

        p = self.predictor
        pm, cm, ds = p.plans_manager, p.configuration_manager, p.dataset_json
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(ds, out_dir / "dataset.json")
        write_json(pm.plans, out_dir / "plans.json")
        preprocessor = cm.preprocessor_class(verbose=False)
        for case, files in cases.items():
            t = time.perf_counter()
            data, _, props = preprocessor.run_case(files, None, pm, cm, ds)
            self.timing.nnunet_s += time.perf_counter() - t
            probs = np.load(coarse_dir / f"{case}.npz")["probabilities"]
            fine = probabilities_to_fine_grid(probs, props, pm.plans, self.model.configuration, data.shape[1:])
            channel = quantize(fine).astype(np.float32) / PROBABILITY_LEVELS
            data = np.vstack((data, channel[None].astype(data.dtype)))
            t = time.perf_counter()
            logits = p.predict_logits_from_preprocessed_data(torch.from_numpy(data)).cpu()
            export_prediction_from_logits(logits, props, cm, pm, ds, str(out_dir / case), save_probabilities)
            self.timing.nnunet_s += time.perf_counter() - t
        return out_dir


# --------------------------------------------------------------------------- pipelines

def _ensemble_in_memory(runners: list[_ModelRunner], cases: dict[str, list[str]], out: Path,
                        members_dir: Path | None, save_probabilities: bool, timing: Timing) -> None:
    """Average the members' probabilities case by case in memory (no .npz round trip through disk).

    Each member runs nnU-Net's preprocessing, sliding-window inference and export-to-original-
    geometry; only the averaging and the one label map written per case are ours.
    ``members_dir``: also write each member's label map (and ``.npz`` with ``save_probabilities``).
    """
    from batchgenerators.utilities.file_and_folder_operations import save_pickle

    from nnunet_iph.imageio import atomic_path

    first = runners[0].predictor
    pm, ds = first.plans_manager, first.dataset_json
    rw = pm.image_reader_writer_class()
    out.mkdir(parents=True, exist_ok=True)
    write_json(ds, out / "dataset.json")
    write_json(pm.plans, out / "plans.json")
    for r in runners if members_dir is not None else []:  # a member folder is a complete prediction folder
        write_json(r.predictor.dataset_json, members_dir / r.model.identifier / "dataset.json")
        write_json(r.predictor.plans_manager.plans, members_dir / r.model.identifier / "plans.json")
    for case, files in cases.items():
        acc, props = None, None
        for r in runners:
            probs, props_r = r.predict_probabilities(files)
            if members_dir is not None:  # for inspection; counted as our overhead
                member = members_dir / r.model.identifier
                _write_prediction(r.predictor, probs, props_r, member / case, save_probabilities, rw, atomic_path,
                                  save_pickle)
            if acc is None:
                acc, props = probs.astype(np.float32, copy=True), props_r
            elif probs.shape != acc.shape:
                raise ValueError(f"{case}: {r.model.identifier} returns probabilities of shape {probs.shape}, "
                                 f"{runners[0].model.identifier} {acc.shape}")
            else:
                acc += probs
        acc /= len(runners)
        _write_prediction(first, acc, props, out / case, save_probabilities, rw, atomic_path, save_pickle)


def _write_prediction(predictor, probs: np.ndarray, props: dict, truncated: Path, save_probabilities: bool, rw,
                      atomic_path, save_pickle) -> None:
    seg = predictor.label_manager.convert_probabilities_to_segmentation(probs)
    seg = seg.numpy() if hasattr(seg, "numpy") else np.asarray(seg)
    ending = predictor.dataset_json["file_ending"]
    with atomic_path(Path(f"{truncated}{ending}")) as tmp:
        rw.write_seg(seg.astype(np.uint8 if seg.max() < 255 else np.uint16), str(tmp), props)
    if save_probabilities:
        with atomic_path(Path(f"{truncated}.npz")) as tmp:
            np.savez_compressed(tmp, probabilities=probs)
        save_pickle(props, f"{truncated}.pkl")


def coarse_model_for(fine: ModelRef, coarse: ModelRef | None = None) -> ModelRef:
    """The coarse stage of a fine cascade model: given, from the plans / environment, or the only candidate."""
    plans = fine.plans()
    cfg = plans["configurations"].get(fine.configuration, {})
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    prev = PlansManager(plans).get_configuration(fine.configuration).previous_stage_name
    if prev is None:
        raise ValueError(f"{fine.folder}: configuration {fine.configuration!r} has no previous_stage; not the fine "
                         "stage of a cascade (use --pipeline single)")
    if coarse is not None:
        if coarse.plans_name != fine.plans_name or coarse.configuration != prev:
            raise ValueError(f"mismatched plans: the fine model {fine.identifier} expects its coarse stage from "
                             f"plans {fine.plans_name!r}, configuration {prev!r}; got {coarse.identifier}")
        return coarse
    trainer = os.environ.get(COARSE_TRAINER_ENV) or cfg.get(PREVIOUS_TRAINER_KEY)
    if trainer:
        return ModelRef(fine.folder.parent / f"{trainer}__{fine.plans_name}__{prev}")
    suffix = f"__{fine.plans_name}__{prev}"
    candidates = sorted(p for p in fine.folder.parent.glob(f"*{suffix}") if any(p.glob("fold_*/checkpoint_*.pth")))
    if len(candidates) == 1:
        return ModelRef(candidates[0])
    raise FileNotFoundError(f"{fine.folder.parent}: {'no' if not candidates else 'several'} trained coarse model(s) "
                            f"'*{suffix}' {[c.name for c in candidates]}; name one with --coarse")


def fine_takes_probabilities(fine: ModelRef) -> bool:
    """Whether the fine model's trainer wants the coarse probabilities (``coarse_input``), found the way
    nnU-Net finds trainers (its own folder, then ``nnUNet_extTrainer``)."""
    import nnunet_iph.trainers as trainers

    try:
        cls = getattr(trainers, fine.trainer)
    except AttributeError:
        from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

        cls = recursive_find_trainer_class_by_name(fine.trainer)
    return getattr(cls, "coarse_input", "argmax") == "probabilities"


def _brain_masks(cases: dict[str, list[str]], brain_dir: Path, ds: dict, settings: PredictSettings,
                 timing: Timing, steps: InputSteps) -> None:
    """Intracranial masks of the input CTs; with the model's own extraction settings where it records them."""
    from nnunet_iph.brain.folder import brain_masks
    from nnunet_iph.brain.settings import BrainMaskSettings

    t = time.perf_counter()
    brain_masks({case: files[0] for case, files in cases.items()}, brain_dir,
                steps.brain_mask or BrainMaskSettings(), progress=settings.verbose, file_ending=ds["file_ending"])
    timing.stages["brain_mask"] = time.perf_counter() - t


@dataclass
class PredictResult:
    output_folder: Path
    cases: list[str]
    volumes_csv: Path
    timing: Timing
    members: dict[str, str]
    dicom: list = field(default_factory=list)  # the DICOM cases (series chosen, others, handling)
    warnings: list[str] = field(default_factory=list)  # e.g. a model input left unmasked (pass-through)


def predict(input_folder: str | os.PathLike, output_folder: str | os.PathLike, pipeline: str,
            models: Sequence[ModelRef], settings: PredictSettings = PredictSettings(),
            coarse: ModelRef | None = None) -> PredictResult:
    """Run ``pipeline`` on every case of ``input_folder``; see the module docstring for the layout."""
    t_start = time.perf_counter()
    if pipeline not in PIPELINES:
        raise ValueError(f"unknown pipeline {pipeline!r}; choose from {PIPELINES}")
    models = list(models)
    if not models:
        raise ValueError("no model given")
    if pipeline in ("single", "cascade") and len(models) != 1:
        what = "the fine stage" if pipeline == "cascade" else "one model"
        raise ValueError(f"pipeline {pipeline!r} takes one model ({what}), got {len(models)}")
    if pipeline in ("ensemble", "planes"):
        check_members(models, require_planes=pipeline == "planes")
    if settings.restrict_to_brain:
        settings = replace(settings, brain_mask=True)  # the restriction computes the masks anyway
    out = Path(output_folder)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {out}: exists and is not a folder; -o names the output folder")
    if settings.patients:
        from nnunet_iph.inference.patients import read_patient_map

        read_patient_map(settings.patients)  # a bad map fails now, not after the inference
    timing = Timing()
    ds = models[0].dataset_json()
    steps = model_steps(models)  # skull stripping / CT copies the training data had (dataset.json)
    # DICOM cases are staged here; removed right after the outputs are written (or at exit, on an error)
    staging = tempfile.TemporaryDirectory(prefix="nnunet-iph-dicom-")
    cases, dicom_cases = gather_inputs(input_folder, ds["file_ending"],
                                       1 if steps.active else len(ds["channel_names"]), Path(staging.name),
                                       settings, timing, out)
    raw_cases = cases  # what the user gave: brain masks, restriction, volumes and QC refer to these
    prepared = None
    if steps.active:  # the same steps as the conversion of the training data, before nnU-Net
        t = time.perf_counter()
        cases, prepared = prepare_cases(cases, Path(staging.name) / "model_inputs", steps,
                                        _staging_ending(ds["file_ending"]), compress=False)
        timing.stages["model_inputs"] = time.perf_counter() - t
    if settings.restrict_to_brain and any(c.handling == "resampled" for c in dicom_cases):
        raise ValueError("--restrict-to-brain with resampled DICOM cases (--dicom-irregular resample) is not "
                         "supported: the masks would be restricted on the resampled grid")
    timing.cases = len(cases)
    crops = None
    if settings.brain_crop is not None:  # segment crops around the brain; pasted back onto the inputs' grids below
        from nnunet_iph.inference import crop

        crop.check_models(models, settings.save_probabilities)
        t = time.perf_counter()
        # the box from the raw CT: a skull-stripped model input no longer shows the skull the mask is found by
        cases, crops = crop.crop_cases(cases, Path(staging.name) / "crops", settings.brain_crop, ds["file_ending"],
                                       mask_from={c: f[0] for c, f in raw_cases.items()}, settings=steps.brain_mask)
        timing.stages["brain_crop"] = time.perf_counter() - t
    members_dir = out / "members"
    members: dict[str, str] = {}

    if pipeline == "single":
        _ModelRunner(models[0], settings, timing).run(cases, out, settings.save_probabilities)
        members[models[0].identifier] = str(out)
    elif pipeline in ("ensemble", "planes"):
        runners = [_ModelRunner(m, settings, timing) for m in models]  # all folds present before any work
        _ensemble_in_memory(runners, cases, out, members_dir if settings.keep_members else None,
                            settings.save_probabilities, timing)
        members = {m.identifier: str(members_dir / m.identifier) for m in models}
    else:
        fine = models[0]
        coarse_model = coarse_model_for(fine, coarse)
        model_steps([fine, coarse_model])  # both stages see the same inputs
        coarse_runner = _ModelRunner(coarse_model, settings, timing)
        fine_runner = _ModelRunner(fine, settings, timing)  # nnU-Net has now looked up (imported) the trainer
        probabilities = fine_takes_probabilities(fine)
        t = time.perf_counter()
        coarse_out = coarse_runner.run(cases, members_dir / f"coarse__{coarse_model.identifier}",
                                       save_probabilities=probabilities)
        timing.stages["coarse"] = time.perf_counter() - t
        t = time.perf_counter()
        if probabilities:
            fine_runner.run_with_coarse_probabilities(cases, out, coarse_out, settings.save_probabilities)
        else:
            fine_runner.run(cases, out, settings.save_probabilities, prev_stage_folder=coarse_out)
        timing.stages["fine"] = time.perf_counter() - t
        members = {f"coarse:{coarse_model.identifier}": str(coarse_out), f"fine:{fine.identifier}": str(out)}

    if crops is not None:
        t = time.perf_counter()
        for folder in {out, *(Path(m) for m in members.values() if settings.keep_members and Path(m).is_dir())}:
            crop.paste_folder(folder, crops, ds["file_ending"])
        timing.stages["brain_crop_paste"] = time.perf_counter() - t
    cases = raw_cases
    brain_dir = out / BRAIN_DIR if settings.brain_mask else None
    restriction = None
    if settings.restrict_to_brain:  # before the DICOM outputs: SEGs, volumes and QC show the restricted masks
        from nnunet_iph.postprocessing.brain import restrict_folder_in_place

        _brain_masks(cases, brain_dir, ds, settings, timing, steps)
        t = time.perf_counter()
        restriction = {"applied_to": "masks (not the probabilities or the members' outputs)",
                       "cases": restrict_folder_in_place(out, cases, ds["file_ending"], brain_dir)}
        timing.stages["restrict_to_brain"] = time.perf_counter() - t
    dicom_info = finish_dicom_cases(dicom_cases, out, ds, settings, timing)
    if settings.brain_mask and not settings.restrict_to_brain:  # after them: resampled cases are back on their grid
        _brain_masks(cases, brain_dir, ds, settings, timing, steps)
    csv_path = write_prediction_outputs(out, cases, ds["file_ending"], ds.get("labels"), pipeline=pipeline,
                                        models=models, qc=settings.qc, patients=settings.patients,
                                        brain_masks=brain_dir)
    staging.cleanup()
    if not settings.keep_members and members_dir.is_dir():
        shutil.rmtree(members_dir)
    timing.total_s = time.perf_counter() - t_start
    write_json({"pipeline": pipeline, "models": [str(m.folder) for m in models],
                "coarse": str(coarse_model.folder) if pipeline == "cascade" else None,
                "members": members, "cases": list(cases), "dicom": dicom_info, "settings": asdict(settings),
                "brain_restriction": restriction,
                "brain_crop": crop.summary(crops, settings.brain_crop) if crops is not None else None,
                "model_inputs": ({"steps": steps.record(), "cases": {c: p.summary() for c, p in prepared.items()}}
                                 if prepared is not None else None),
                "timing": {**timing.summary(), "stages": timing.stages}}, out / "pipeline.json")
    warnings = [w for p in (prepared or {}).values() for w in p.warnings]
    return PredictResult(out, list(cases), csv_path, timing, members, dicom_cases, warnings)
