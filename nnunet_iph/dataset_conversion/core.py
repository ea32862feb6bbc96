"""Common conversion engine: source subjects -> nnU-Net raw dataset, checked, lossless, restartable.

Every converter (multi-site manifest, INSTANCE, PhysioNet CT-ICH, MISTIE-style) builds a list of
:class:`Subject` and calls :func:`run_conversion`, which

* checks the listing (duplicate ids, split values, missing masks) and then every case in worker
  processes (:func:`convert_case`, see :mod:`.checks`);
* writes each case into a hidden staging folder and moves it into ``imagesTr``/``labelsTr``
  (``imagesTs``/``labelsTs``) label first, image last, so nnU-Net never sees half a case;
* copies NIfTI sources byte for byte (gzip-compressing ``.nii``) when nothing needs changing,
  which keeps every header field (including sheared sforms of gantry-tilted scans) and is faster
  than a SimpleITK round trip; other formats are written by SimpleITK with their pixel type;
* remembers what it converted (``.nnunet_iph/cases/<case>.json``): a re-run skips unchanged cases,
  finishes an interrupted run, and removes outputs of cases that are gone;
* writes ``cases.csv``, ``conversion_report.csv``, the splits, and ``dataset.json`` last
  (``dataset.json`` is removed while a run changes the folder: no ``dataset.json`` = incomplete).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import multiprocessing
import os
import re
import shutil
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import SimpleITK as sitk

from nnunet_iph import __version__
from nnunet_iph.dataset_conversion.checks import (DEFAULT_LABELS, ConversionError, check_image_values,
                                                  check_mask_values, check_volume, describe_mismatch,
                                                  geometry_diff, sitk_message)
from nnunet_iph.dataset_conversion.sources import Volume, read_volume, resample_irregular, \
    source_fingerprint
from nnunet_iph.dataset_conversion.splits import (SPLIT_FILES, SplitCase, choose_test_patients, kfold_splits,
                                                  loso_splits)
from nnunet_iph.imageio import GZIP_MAGIC, atomic_path, write_json

#: bump when the conversion of a case changes, so that re-runs redo old outputs
ENGINE_VERSION = 1
FILE_ENDING = ".nii.gz"
META_DIR = ".nnunet_iph"
OUTPUT_DIRS = ("imagesTr", "labelsTr", "imagesTs", "labelsTs")
GZIP_LEVEL = 6
IRREGULAR_MODES = ("error", "keep", "resample")
SPLIT_SCHEMES = ("kfold", "loso")
#: columns of cases.csv that come first, in this order; converter metadata follows
CASE_COLUMNS = ["case_id", "subject_id", "patient_id", "split", "fold", "site", "age", "sex", "scanner",
                "phase", "volume_ml", "foreground_voxels", "source_image", "source_mask", "image_file",
                "label_file", "size", "spacing", "pixel_type", "orientation", "notes"]
REPORT_COLUMNS = ["source_row", "subject_id", "case_id", "patient_id", "split", "fate", "reason", "notes",
                  "source_image", "source_mask"]


@dataclass(frozen=True)
class ConversionOptions:
    """Options that change converted files (recorded in dataset.json and in each case's fingerprint)."""

    reorient: str | None = None  # e.g. "LPS" / "RAS" (DICOM convention, as SimpleITK DICOMOrient)
    geometry_tolerance: float = 1e-3  # mm (spacing, origin) and direction cosines
    resample_mask: bool = False  # nearest-neighbour resample masks whose grid differs beyond tolerance
    merge_labels: bool = False  # map every positive mask label to 1
    dicom_irregular: str = "error"  # gantry tilt / non-uniform spacing: error | keep | resample
    labels: tuple[tuple[str, int], ...] = tuple(DEFAULT_LABELS.items())

    def validate(self) -> None:
        if self.reorient is not None:
            code = self.reorient.upper()
            axes = [{"L": 0, "R": 0, "A": 1, "P": 1, "S": 2, "I": 2}.get(c) for c in code]
            if len(code) != 3 or None in axes or sorted(axes) != [0, 1, 2]:
                raise ValueError(f"reorient {self.reorient!r}: expected a 3-letter orientation such as "
                                 f"LPS or RAS (one of L/R, A/P, S/I each)")
        if self.dicom_irregular not in IRREGULAR_MODES:
            raise ValueError(f"dicom_irregular {self.dicom_irregular!r}: choose from {IRREGULAR_MODES}")
        if not self.geometry_tolerance >= 0:
            raise ValueError(f"geometry_tolerance must be >= 0, got {self.geometry_tolerance}")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = dict(self.labels)
        return d


@dataclass
class Subject:
    """One input scan as listed by a converter, before any file is opened."""

    subject_id: str
    image: str | None
    mask: str | None
    split: str | None = None  # "train", "test", or None (decided by test_fraction)
    patient_id: str | None = None  # grouping for patient-level splits; default: subject_id
    site: str = ""
    meta: dict[str, Any] = field(default_factory=dict)  # age, sex, scanner, phase, flags, extra columns
    source_row: int | str | None = None  # manifest line (for the report)
    case_id: str | None = None  # default: sanitised subject_id
    skip: str | None = None  # defect found while listing -> skipped (fails with strict)
    exclude: str | None = None  # deliberately left out (cohort definition) -> excluded
    expected_slices: tuple[int, ...] | None = None  # z indices with hemorrhage per a slice table
    expected_num_slices: int | None = None


@dataclass(frozen=True)
class CaseTask:
    case_id: str
    image: str
    mask: str | None
    staged_image: str
    staged_label: str | None
    options: ConversionOptions
    expected_slices: tuple[int, ...] | None = None
    expected_num_slices: int | None = None


def sanitise_case_id(subject_id: str) -> str:
    """nnU-Net-safe case id: letters, digits, '-' and '_' (anything else becomes '_')."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", str(subject_id).strip()).strip("_")


def orientation_code(image: sitk.Image) -> str:
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())


# --------------------------------------------------------------------------------------------------
# one case (runs in a worker process)
# --------------------------------------------------------------------------------------------------

def _copy_nifti(src: Path, dest: Path) -> None:
    """Byte-identical copy of a .nii.gz, or gzip of a .nii (deterministic: mtime 0 in the gzip header)."""
    with open(src, "rb") as fh:
        magic = fh.read(2)
    with atomic_path(dest) as tmp:
        if magic == GZIP_MAGIC:
            shutil.copyfile(src, tmp)
        else:
            with open(src, "rb") as fi, open(tmp, "wb") as raw, \
                    gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL, mtime=0) as fo:
                shutil.copyfileobj(fi, fo, 1 << 22)


def _write(image: sitk.Image, vol: Volume, changed: bool, dest: Path) -> str:
    if vol.kind == "nifti" and not changed:
        _copy_nifti(vol.path, dest)
        return "copied"
    with atomic_path(dest) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)
    return "written"


def _from_array(arr: np.ndarray, ref: sitk.Image) -> sitk.Image:
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(ref)
    return out


def _process_case(task: CaseTask) -> dict[str, Any]:
    opts = task.options
    notes: list[str] = []
    allowed = {v for _, v in opts.labels}
    img_v = read_volume(task.image, "image")
    image = img_v.image
    check_volume(image, img_v.path, "image")
    check_image_values(sitk.GetArrayViewFromImage(image), img_v.path)
    image_changed = False

    mask = m_v = None
    mask_changed = False
    labels_present: list[int] = []
    if task.mask:
        m_v = read_volume(task.mask, "mask")
        mask = m_v.image
        check_volume(mask, m_v.path, "mask")
        marr = sitk.GetArrayViewFromImage(mask)
        repl, labels_present = check_mask_values(marr, m_v.path, allowed, opts.merge_labels)
        if repl is not None:
            mask = _from_array(repl, mask)
            mask_changed = True
            notes.append("mask labels merged to 0/1")
        elif marr.dtype.kind in "fb":
            mask = sitk.Cast(mask, sitk.sitkUInt8)
            mask_changed = True
            notes.append(f"mask pixel type {marr.dtype} stored as uint8 (values unchanged)")
        diff = geometry_diff(image, mask)
        if not diff.exact:
            if diff.within(opts.geometry_tolerance):
                mask.CopyInformation(image)
                mask_changed = True
                notes.append(f"mask geometry differed from the image by <= "
                             f"{max(diff.spacing, diff.origin, diff.direction):.2g} (within tolerance); "
                             f"image geometry used")
            elif opts.resample_mask:
                before = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
                vox_before = math.prod(mask.GetSpacing())
                mask = sitk.Resample(mask, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                                     mask.GetPixelID())
                after = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
                if before and not after:
                    raise ConversionError(f"mask {m_v.path}: lies outside image {img_v.path} (nothing "
                                          f"left after resampling onto the image grid)")
                mask_changed = True
                notes.append(f"mask resampled (nearest neighbour) onto the image grid "
                             f"({describe_mismatch(image, m_v.image, diff, opts.geometry_tolerance)}); "
                             f"foreground {before * vox_before / 1000:.3f} -> "
                             f"{after * math.prod(image.GetSpacing()) / 1000:.3f} mL")
            else:
                raise ConversionError(
                    f"mask {m_v.path}: does not match image {img_v.path}: "
                    f"{describe_mismatch(image, mask, diff, opts.geometry_tolerance)} (tolerance "
                    f"{opts.geometry_tolerance:g}; pass --resample-mask to resample the mask "
                    f"nearest-neighbour onto the image grid)")

    # DICOM series with gantry tilt or non-uniform slice spacing
    geom = img_v.series
    if geom is not None and geom.irregular:
        desc = geom.describe()
        if opts.dicom_irregular == "error":
            raise ConversionError(f"image {img_v.path}: DICOM series has {desc}; pass --dicom-irregular "
                                  f"resample (regular orthogonal grid) or keep (geometry as read, "
                                  f"not corrected)")
        if opts.dicom_irregular == "keep":
            notes.append(f"DICOM series has {desc}; kept as read by SimpleITK (geometry not corrected)")
        else:
            if m_v is not None and m_v.series is not None and (
                    m_v.series.positions.shape != geom.positions.shape
                    or np.abs(m_v.series.positions - geom.positions).max() > opts.geometry_tolerance):
                raise ConversionError(f"mask {m_v.path}: DICOM slice positions differ from image "
                                      f"{img_v.path}; cannot resample both the same way")
            sp = image.GetSpacing()[:2]
            arr = sitk.GetArrayFromImage(image)
            image = resample_irregular(arr, geom, sp, nearest=False, fill=float(arr.min()))
            image_changed = True
            if mask is not None:
                mask = resample_irregular(sitk.GetArrayFromImage(mask), geom, sp, nearest=True, fill=0)
                mask_changed = True
            notes.append(f"DICOM series had {desc}; resampled onto a regular orthogonal grid "
                         f"(size {image.GetSize()}, slice spacing {image.GetSpacing()[2]:.4g} mm)")

    # consistency with a per-slice table (array axis 0 = z); checked before any reorientation
    if mask is not None and (task.expected_slices is not None or task.expected_num_slices is not None):
        marr = sitk.GetArrayViewFromImage(mask)
        if task.expected_num_slices is not None and task.expected_num_slices != marr.shape[0]:
            notes.append(f"slice table lists {task.expected_num_slices} slices, volume has {marr.shape[0]}")
        if task.expected_slices is not None:
            has = set(np.flatnonzero(marr.reshape(marr.shape[0], -1).any(axis=1)).tolist())
            exp = set(task.expected_slices)
            if has != exp:
                notes.append(f"mask slices with hemorrhage differ from the slice table (only mask: "
                             f"{sorted(k + 1 for k in has - exp)}, only table: "
                             f"{sorted(k + 1 for k in exp - has)}; 1-based SliceNumber)")

    if opts.reorient:
        before = orientation_code(image)
        target = opts.reorient.upper()
        if before != target:
            image = sitk.DICOMOrient(image, target)
            image_changed = True
            if mask is not None:
                mask = sitk.DICOMOrient(mask, target)
                mask_changed = True
            notes.append(f"reoriented {before} -> {target}")

    fg = 0
    volume_ml = None
    if mask is not None:
        fg = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
        volume_ml = round(fg * math.prod(image.GetSpacing()) / 1000.0, 6)
    how_img = _write(image, img_v, image_changed, Path(task.staged_image))
    how_mask = None
    if mask is not None and task.staged_label:
        how_mask = _write(mask, m_v, mask_changed, Path(task.staged_label))  # type: ignore[arg-type]
    return {
        "ok": True, "case_id": task.case_id, "reason": "", "notes": notes,
        "volume_ml": volume_ml, "foreground_voxels": fg if mask is not None else None,
        "labels_present": labels_present,
        "size": "x".join(map(str, image.GetSize())),
        "spacing": "x".join(f"{s:.6g}" for s in image.GetSpacing()),
        "pixel_type": image.GetPixelIDTypeAsString(),
        "orientation": orientation_code(image),
        "image_written": how_img, "label_written": how_mask,
    }


def convert_case(task: CaseTask) -> dict[str, Any]:
    """Check and stage one case; never raises (a defect comes back as ``ok=False`` with the reason)."""
    warn = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # our own checks report geometry problems
    try:
        return _process_case(task)
    except Exception as err:  # noqa: BLE001 - a bug or an odd file must not lose the other cases
        for p in (task.staged_image, task.staged_label):  # no half-staged case either
            if p:
                Path(p).unlink(missing_ok=True)
        detail = sitk_message(err) if isinstance(err, RuntimeError) else str(err)
        reason = (str(err) if isinstance(err, ConversionError) else
                  f"unexpected error while converting {task.image}: {type(err).__name__}: {detail}")
        return {"ok": False, "case_id": task.case_id, "reason": reason, "notes": []}
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warn)


def _init_worker(threads: int, parent: int) -> None:
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(max(1, threads))
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _watch_parent(parent: int) -> None:
    """Exit when the main process is gone: pool workers of a killed run would otherwise wait forever."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(1)


# --------------------------------------------------------------------------------------------------
# the whole dataset (main process)
# --------------------------------------------------------------------------------------------------

@dataclass
class _Entry:
    """Bookkeeping of one subject through the run (becomes one report row)."""

    subject: Subject
    case_id: str
    patient_id: str
    split: str | None = None
    fate: str = ""  # converted | skipped | excluded
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    record: dict[str, Any] | None = None
    outputs: dict[str, str] = field(default_factory=dict)  # role -> path relative to the dataset

    def skip(self, reason: str) -> None:
        if self.fate != "skipped":
            self.fate, self.reason = "skipped", reason


def dataset_folder_name(dataset_id: int, name: str) -> str:
    return f"Dataset{dataset_id:03d}_{name}"


def _validate_target(dataset_id: int, name: str) -> None:
    if not isinstance(dataset_id, int) or isinstance(dataset_id, bool) or not 1 <= dataset_id <= 999:
        raise ValueError(f"dataset id must be an integer in 1..999, got {dataset_id!r}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name or ""):
        raise ValueError(f"dataset name {name!r}: use letters, digits, '-' and '_' only")


def _resolve_raw_root(raw_root: str | os.PathLike | None) -> Path:
    root = raw_root if raw_root is not None else os.environ.get("nnUNet_raw")
    if not root:
        raise ValueError("no output folder: pass raw_root (--raw-root) or set nnUNet_raw")
    return Path(root).expanduser().resolve()


def _prepare_folder(raw: Path, dataset_id: int, name: str, overwrite: bool) -> Path:
    ds = raw / dataset_folder_name(dataset_id, name)
    if raw.is_dir():
        clash = [p.name for p in raw.glob(f"Dataset{dataset_id:03d}_*") if p.is_dir() and p != ds]
        if clash:
            raise ValueError(f"{raw}: dataset id {dataset_id} is already used by {', '.join(sorted(clash))}; "
                             f"nnU-Net needs unique ids (pick another --dataset-id or remove it)")
    if ds.exists() and not (ds / META_DIR).is_dir() and any(ds.iterdir()) and not overwrite:
        raise ValueError(f"{ds}: exists and was not written by nnunet-iph convert; remove it or pass "
                         f"--overwrite")
    (ds / META_DIR / "cases").mkdir(parents=True, exist_ok=True)
    staging = ds / META_DIR / "staging"
    shutil.rmtree(staging, ignore_errors=True)  # leftovers of a killed run
    staging.mkdir()
    for sub in OUTPUT_DIRS:  # temporary files of a killed atomic write
        d = ds / sub
        if d.is_dir():
            for p in d.iterdir():
                if p.name.startswith(".") and ".tmp" in p.name:
                    p.unlink(missing_ok=True)
    return ds


def _plan(subjects: list[Subject], test_fraction: float, seed: int) -> list[_Entry]:
    """Case ids, duplicate checks and train/test assignment (no file is opened here)."""
    entries: list[_Entry] = []
    for s in subjects:
        sid = str(s.subject_id).strip() if s.subject_id is not None else ""
        case_id = sanitise_case_id(s.case_id if s.case_id else sid)
        e = _Entry(s, case_id, str(s.patient_id).strip() if s.patient_id else (case_id or sid))
        e.split = s.split
        if s.exclude:
            e.fate, e.reason = "excluded", s.exclude
        elif s.skip:
            e.skip(s.skip)
        elif not sid:
            e.skip("empty subject_id")
        elif not case_id:
            e.skip(f"subject_id {sid!r} has no letters or digits to build a case id from")
        elif not s.image:
            e.skip("no image path given")
        elif s.split not in (None, "train", "test"):
            e.skip(f"split {s.split!r} is neither 'train' nor 'test'")
        entries.append(e)

    def where(e: _Entry) -> str:
        return f"row {e.subject.source_row}" if e.subject.source_row is not None else repr(e.subject.subject_id)

    # duplicates: subject ids, and different subject ids that sanitise to one case id
    live = [e for e in entries if e.fate != "excluded" and str(e.subject.subject_id or "").strip()]
    by_sid: dict[str, list[_Entry]] = {}
    for e in live:
        by_sid.setdefault(str(e.subject.subject_id).strip(), []).append(e)
    for sid, es in by_sid.items():
        if len(es) > 1:
            for e in es:
                e.skip(f"duplicate subject_id {sid!r} ({', '.join(where(x) for x in es)}); ids must be unique")
    by_case: dict[str, list[_Entry]] = {}
    for e in live:
        if e.case_id:
            by_case.setdefault(e.case_id, []).append(e)
    for cid, es in by_case.items():
        sids = sorted({str(x.subject.subject_id).strip() for x in es})
        if len(sids) > 1:
            for e in es:
                e.skip(f"subject_ids {', '.join(map(repr, sids))} all map to case id {cid!r}")

    # unlabelled scans without an explicit split are test scans
    ok = [e for e in entries if e.fate == ""]
    for e in ok:
        if not e.subject.mask:
            if e.split == "train":
                e.skip("no mask given for a training case")
            elif e.split is None:
                e.split = "test"
                e.notes.append("no mask: unlabelled, put in imagesTs")
    # a patient's scans must not straddle train and test
    ok = [e for e in entries if e.fate == ""]
    by_patient: dict[str, list[_Entry]] = {}
    for e in ok:
        by_patient.setdefault(e.patient_id, []).append(e)
    for pid, es in by_patient.items():
        fixed = {e.split for e in es if e.split}
        if len(fixed) > 1:
            for e in es:
                e.skip(f"patient {pid!r} has scans in both train and test ({', '.join(where(x) for x in es)})")
        elif fixed:
            only = next(iter(fixed))
            for e in es:
                if e.split is None:
                    e.split = only
    undecided = {}
    for e in entries:
        if e.fate == "" and e.split is None:
            undecided.setdefault(e.patient_id, e.subject.site or "")
    test_patients = choose_test_patients(undecided, test_fraction, seed)
    for e in entries:
        if e.fate == "" and e.split is None:
            e.split = "test" if e.patient_id in test_patients else "train"
    return entries


def _output_paths(e: _Entry) -> dict[str, str]:
    tr = e.split == "train"
    out = {"image": f"{'imagesTr' if tr else 'imagesTs'}/{e.case_id}_0000{FILE_ENDING}"}
    if e.subject.mask:
        out["label"] = f"{'labelsTr' if tr else 'labelsTs'}/{e.case_id}{FILE_ENDING}"
    return out


def _fingerprint(e: _Entry, opts: ConversionOptions) -> dict[str, Any]:
    s = e.subject
    return {"engine": ENGINE_VERSION, "image": source_fingerprint(s.image), "mask": source_fingerprint(s.mask),
            "options": opts.as_dict(), "outputs": e.outputs,
            "expected_slices": list(s.expected_slices) if s.expected_slices is not None else None,
            "expected_num_slices": s.expected_num_slices}


def _stat(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _load_unchanged(ds: Path, e: _Entry, fp: dict[str, Any]) -> dict[str, Any] | None:
    state_file = ds / META_DIR / "cases" / f"{e.case_id}.json"
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if state.get("fingerprint") != json.loads(json.dumps(fp)):
        return None
    for rel, st in state.get("outputs", {}).items():
        if _stat(ds / rel) != st:
            return None
    return state.get("record")


class _Committer:
    """Moves staged cases into place; drops dataset.json before the first change."""

    def __init__(self, ds: Path) -> None:
        self.ds = ds
        self.invalidated = False

    def invalidate(self) -> None:
        if not self.invalidated:
            (self.ds / "dataset.json").unlink(missing_ok=True)
            self.invalidated = True

    def commit(self, e: _Entry, staged: dict[str, str], fp: dict[str, Any], record: dict[str, Any]) -> None:
        self.invalidate()
        outputs = {}
        for role in ("label", "image"):  # the image last: to nnU-Net a case exists once its image does
            if role in e.outputs:
                dest = self.ds / e.outputs[role]
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged[role], dest)
                outputs[e.outputs[role]] = _stat(dest)
        write_json({"fingerprint": fp, "outputs": outputs, "record": record},
                   self.ds / META_DIR / "cases" / f"{e.case_id}.json")


def _meta_column(key: str) -> str:
    """Metadata keeps its column name unless that is one of ours (then ``source_<name>``)."""
    if key in CASE_COLUMNS and key not in ("age", "sex", "scanner", "phase"):
        return f"source_{key}"
    return key


def _fmt(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float):
        return f"{v:.10g}" if v == v else ""
    return v


def _write_if_changed(text: str, path: Path) -> None:
    """Atomic UTF-8 write, skipped when the content is already there (re-runs leave files untouched)."""
    data = text.encode("utf-8")
    try:
        if path.read_bytes() == data:
            return
    except OSError:
        pass
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _write_csv(rows: list[dict[str, Any]], columns: list[str], path: Path) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(r.get(k)) for k in columns})
    _write_if_changed(buf.getvalue(), path)


def _write_json(obj: Any, path: Path) -> None:
    _write_if_changed(json.dumps(obj, indent=2) + "\n", path)  # ASCII: nnU-Net reads JSON with the locale encoding


def _summary_line(ds: Path, counts: dict[str, int]) -> str:
    return (f"{ds.name}: {counts['converted']} converted ({counts['train']} train, {counts['test']} test; "
            f"{counts['unchanged']} unchanged), {counts['skipped']} skipped, {counts['excluded']} excluded")


def run_conversion(subjects: Iterable[Subject], *, dataset_id: int, name: str,
                   raw_root: str | os.PathLike | None, converter: str, source: str | os.PathLike,
                   options: ConversionOptions | None = None, test_fraction: float = 0.0, seed: int = 0,
                   num_workers: int = 1, strict: bool = False, num_folds: int = 5,
                   split_scheme: str = "kfold", overwrite: bool = False, progress: bool = True,
                   description: str = "", reference: str = "", licence: str = "",
                   extra_options: dict[str, Any] | None = None) -> Path:
    """Convert ``subjects`` into ``raw_root/DatasetNNN_Name``; see the module docstring."""
    opts = options or ConversionOptions()
    opts.validate()
    _validate_target(dataset_id, name)
    if split_scheme not in SPLIT_SCHEMES:
        raise ValueError(f"split_scheme {split_scheme!r}: choose from {SPLIT_SCHEMES}")
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    if num_folds < 2:
        raise ValueError(f"num_folds must be >= 2, got {num_folds}")
    subjects = list(subjects)
    if not subjects:
        raise ValueError(f"{source}: lists no subjects")
    raw = _resolve_raw_root(raw_root)
    entries = _plan(subjects, test_fraction, seed)
    if strict:
        bad = [e for e in entries if e.fate == "skipped"]
        if bad:
            raise ValueError(_strict_message(bad, len(entries)))

    created = not (raw / dataset_folder_name(dataset_id, name)).exists()
    ds = _prepare_folder(raw, dataset_id, name, overwrite)
    staging = ds / META_DIR / "staging"
    committer = _Committer(ds)
    todo: list[tuple[_Entry, CaseTask, dict[str, Any]]] = []
    n_unchanged = 0
    for e in entries:
        if e.fate:
            continue
        e.outputs = _output_paths(e)
        fp = _fingerprint(e, opts)
        rec = _load_unchanged(ds, e, fp)
        if rec is not None:
            e.fate, e.record = "converted", rec
            e.notes.extend(rec.get("notes", []))
            n_unchanged += 1
            continue
        task = CaseTask(case_id=e.case_id, image=str(e.subject.image), mask=e.subject.mask or None,
                        staged_image=str(staging / f"{e.case_id}.image{FILE_ENDING}"),
                        staged_label=str(staging / f"{e.case_id}.label{FILE_ENDING}") if e.subject.mask else None,
                        options=opts, expected_slices=e.subject.expected_slices,
                        expected_num_slices=e.subject.expected_num_slices)
        todo.append((e, task, fp))

    try:
        pending = _execute(todo, num_workers, strict, progress, committer, name)
        for e, task, fp, res in pending:  # strict: everything checked, now move it all into place
            committer.commit(e, _staged(task), fp, _record(res))
    except ValueError:
        if created:  # strict failure: leave no trace of this run
            shutil.rmtree(ds, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _remove_stale(ds, entries, committer)

    return _finish(ds, entries, opts, converter=converter, source=source, name=name, test_fraction=test_fraction,
                   seed=seed, num_folds=num_folds, split_scheme=split_scheme, strict=strict,
                   n_unchanged=n_unchanged, description=description, reference=reference, licence=licence,
                   extra_options=extra_options or {}, committer=committer)


def _staged(task: CaseTask) -> dict[str, str]:
    out = {"image": task.staged_image}
    if task.staged_label:
        out["label"] = task.staged_label
    return out


def _record(res: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in res.items() if k not in ("ok", "reason")}


def _strict_message(bad: list[_Entry], total: int) -> str:
    lines = [f"strict: {len(bad)} of {total} subject(s) cannot be converted (nothing was written):"]
    lines += [f"  {e.subject.subject_id}: {e.reason}" for e in bad[:20]]
    if len(bad) > 20:
        lines.append(f"  ... and {len(bad) - 20} more")
    return "\n".join(lines)


def _execute(todo, num_workers: int, strict: bool, progress: bool, committer: _Committer, name: str):
    """Run the case tasks (in-process for one worker); commit as they finish unless ``strict``."""
    from tqdm.auto import tqdm

    pending = []
    failed: list[_Entry] = []
    bar = tqdm(total=len(todo), desc=f"convert {name}", unit="case", disable=not progress or not todo,
               file=sys.stderr)

    def handle(e: _Entry, task: CaseTask, fp: dict[str, Any], res: dict[str, Any]) -> bool:
        bar.update(1)
        if not res["ok"]:
            e.skip(res["reason"])
            failed.append(e)
            return not strict
        e.fate = "converted"
        e.record = _record(res)
        e.notes.extend(res.get("notes", []))
        if strict:
            pending.append((e, task, fp, res))
        else:
            committer.commit(e, _staged(task), fp, e.record)
        return True

    try:
        if num_workers == 1 or len(todo) <= 1:
            for e, task, fp in todo:
                if not handle(e, task, fp, convert_case(task)):
                    break
        else:
            workers = min(num_workers, len(todo))
            threads = max(1, (os.cpu_count() or 1) // workers)
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                     initargs=(threads, os.getpid())) as pool:
                futures = {pool.submit(convert_case, task): (e, task, fp) for e, task, fp in todo}
                try:
                    for fut in as_completed(futures):
                        e, task, fp = futures[fut]
                        if not handle(e, task, fp, fut.result()):
                            break
                finally:
                    for f in futures:
                        f.cancel()
    finally:
        bar.close()
    if strict and failed:
        raise ValueError(_strict_message(failed, len(todo)))
    return pending


def _remove_stale(ds: Path, entries: list[_Entry], committer: _Committer) -> None:
    """Outputs of cases that are no longer converted (removed, now skipped, moved train<->test)."""
    keep = {rel for e in entries if e.fate == "converted" for rel in e.outputs.values()}
    for sub in OUTPUT_DIRS:
        d = ds / sub
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            if f"{sub}/{p.name}" not in keep and p.is_file():
                committer.invalidate()
                p.unlink()
    live = {e.case_id for e in entries if e.fate == "converted"}
    for p in (ds / META_DIR / "cases").glob("*.json"):
        if p.stem not in live:
            p.unlink()


def _finish(ds: Path, entries: list[_Entry], opts: ConversionOptions, *, converter: str, source, name: str,
            test_fraction: float, seed: int, num_folds: int, split_scheme: str, strict: bool,
            n_unchanged: int, description: str, reference: str, licence: str,
            extra_options: dict[str, Any], committer: _Committer) -> Path:
    conv = sorted((e for e in entries if e.fate == "converted"), key=lambda e: e.case_id)
    train = [e for e in conv if e.split == "train"]
    counts = {"subjects": len(entries), "converted": len(conv), "train": len(train),
              "test": len(conv) - len(train), "unchanged": n_unchanged,
              "skipped": sum(e.fate == "skipped" for e in entries),
              "excluded": sum(e.fate == "excluded" for e in entries)}

    # report: every subject and its fate, in listing order
    report_rows = [{
        "source_row": e.subject.source_row, "subject_id": e.subject.subject_id,
        "case_id": e.case_id, "patient_id": e.patient_id, "split": e.split if e.fate == "converted" else "",
        "fate": e.fate, "reason": e.reason, "notes": "; ".join(e.notes),
        "source_image": e.subject.image or "", "source_mask": e.subject.mask or ""} for e in entries]
    _write_csv(report_rows, REPORT_COLUMNS, ds / "conversion_report.csv")

    # splits over the training cases
    split_cases = [SplitCase(e.case_id, e.patient_id, e.subject.site or "", (e.record or {}).get("volume_ml"))
                   for e in train]
    kfold = kfold_splits(split_cases, num_folds, seed)
    loso, sites = loso_splits(split_cases)
    chosen = kfold if split_scheme == "kfold" else loso
    if split_scheme == "loso" and not loso:
        raise ValueError(f"split_scheme 'loso' needs training cases from at least 2 sites; found {sites}")
    for key, splits in (("kfold", kfold), ("loso", loso), ("final", chosen)):
        path = ds / SPLIT_FILES[key]
        if splits:
            _write_json(splits, path)
        else:
            path.unlink(missing_ok=True)
    fold_of = {cid: i for i, f in enumerate(kfold) for cid in f["val"]}

    # cases.csv: one row per converted case, joinable on case_id
    extra_cols: list[str] = []
    for e in conv:
        for k in e.subject.meta:
            k = _meta_column(k)
            if k not in CASE_COLUMNS and k not in extra_cols:
                extra_cols.append(k)
    rows = []
    for e in conv:
        rec = e.record or {}
        row = {k: rec.get(k) for k in ("volume_ml", "foreground_voxels", "size", "spacing", "pixel_type",
                                       "orientation")}
        row.update(case_id=e.case_id, subject_id=e.subject.subject_id, patient_id=e.patient_id, split=e.split,
                   fold=fold_of.get(e.case_id), site=e.subject.site,
                   source_image=str(Path(e.subject.image).resolve()) if e.subject.image else "",
                   source_mask=str(Path(e.subject.mask).resolve()) if e.subject.mask else "",
                   image_file=e.outputs.get("image"), label_file=e.outputs.get("label", ""),
                   notes="; ".join(e.notes))
        for k, v in e.subject.meta.items():
            row[_meta_column(k)] = v
        rows.append(row)
    _write_csv(rows, CASE_COLUMNS + extra_cols, ds / "cases.csv")

    summary = _summary_line(ds, counts)
    print(summary, file=sys.stderr)
    skipped = [e for e in entries if e.fate == "skipped"]
    for e in skipped[:10]:
        print(f"  skipped {e.subject.subject_id}: {e.reason}", file=sys.stderr)
    if len(skipped) > 10:
        print(f"  ... {len(skipped) - 10} more in {ds / 'conversion_report.csv'}", file=sys.stderr)
    if not conv:
        raise ValueError(f"{source}: no case could be converted; see {ds / 'conversion_report.csv'}")

    dataset_json = {
        "channel_names": {"0": "CT"},
        "labels": dict(opts.labels),
        "numTraining": len(train),
        "file_ending": FILE_ENDING,
        "overwrite_image_reader_writer": "SimpleITKIO",
        "name": name,
        "description": description,
        "reference": reference,
        "licence": licence,
        "numTest": len(conv) - len(train),
        "nnunet_iph_conversion": {
            "tool": f"nnunet-iph {__version__}", "converter": converter, "source": str(Path(source).resolve()),
            "options": {**opts.as_dict(), **extra_options}, "test_fraction": test_fraction, "seed": seed,
            "num_folds": num_folds, "split_scheme": split_scheme, "strict": strict,
            "counts": {k: v for k, v in counts.items() if k != "unchanged"},
            "files": {"cases": "cases.csv", "report": "conversion_report.csv",
                      "splits": SPLIT_FILES["final"] if chosen else None},
        },
    }
    _write_json(dataset_json, ds / "dataset.json")
    return ds
