"""One case: check a subject's image and mask and stage the files nnU-Net will read (worker side).

"Check exactly the bytes you copy": a NIfTI source is first copied into the private staging
folder and every check (readability, truncation, NaN, labels, geometry, the recorded volume) is
run on that copy, which is then what lands in the dataset. A source that changes, or a stale
sibling (``X.nii`` beside ``X.nii.gz``) that ITK would open instead, cannot make the checks see
other bytes than the ones written.
"""

from __future__ import annotations

import errno
import gzip
import math
import shutil
import signal
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from nnunet_iph.dataset_conversion.checks import (DEFAULT_LABELS, ConversionError, check_image_values,
                                                  check_mask_values, check_volume, ct_units_warning,
                                                  describe_mismatch, geometry_diff, sitk_message)
from nnunet_iph.dataset_conversion.sources import Volume, read_volume, resample_irregular
from nnunet_iph.dicom.reader import IRREGULAR_MODES
from nnunet_iph.imageio import GZIP_MAGIC, InputError, atomic_path, is_nifti, read_image, write_image
from nnunet_iph.inference.model_inputs import InputSteps, link_or_copy, skull_strip

FILE_ENDING = ".nii.gz"
GZIP_LEVEL = 6


@dataclass(frozen=True)
class ConversionOptions:
    """Options that change converted files (recorded in dataset.json and in each case's fingerprint)."""

    reorient: str | None = None  # e.g. "LPS" / "RAS" (DICOM convention, as SimpleITK DICOMOrient)
    geometry_tolerance: float = 1e-3  # mm (spacing, origin) and direction cosines
    resample_mask: bool = False  # nearest-neighbour resample masks whose grid differs beyond tolerance
    merge_labels: bool = False  # map every positive mask label to 1
    dicom_irregular: str = "error"  # gantry tilt / non-uniform spacing: error | keep | resample
    labels: tuple[tuple[str, int], ...] = tuple(DEFAULT_LABELS.items())
    input_steps: InputSteps = InputSteps()  # skull stripping, CT channel copies (repeated at prediction)

    def validate(self) -> None:
        self.input_steps.validate()
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
        del d["input_steps"]
        if self.input_steps.active:  # absent otherwise: fingerprints of earlier conversions stay valid
            d["input_steps"] = self.input_steps.record()
        return d


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
    staged_channels: tuple[str, ...] = ()  # channels 1.. of --ct-channels: links of the staged image
    staged_brain: str | None = None  # the intracranial mask (--brain-mask)


class OutputError(Exception):
    """Writing into the staging folder failed (disk full, not writable): fatal for the run, not the case."""


def orientation_code(image: sitk.Image) -> str:
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())


def init_worker() -> None:
    """Pool worker setup: Ctrl-C reaches every process of the terminal's group; only the main process
    handles it (one message, cleanup), workers finish their case quietly (see ``core._quiet_workers``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _snapshot_name(src: Path, staged: Path) -> Path:
    """The copy of ``src`` that is checked: same suffix (ITK picks the reader by it), a stem of its own."""
    suffix = ".nii.gz" if src.name.lower().endswith(".gz") else ".nii"
    return staged.with_name(staged.name[: -len(FILE_ENDING)] + ".source" + suffix)


def _read_staged(task_path: str, staged: Path, role: str, snaps: list[Path]) -> tuple[Volume, Path | None]:
    """Read a source for checking. NIfTI: copy it next to ``staged`` and read that copy (returned,
    and added to ``snaps`` for cleanup)."""
    src = Path(task_path)
    if src.is_dir() or not is_nifti(src) or not src.exists():
        return read_volume(src, role), None
    snap = _snapshot_name(src, staged)
    snaps.append(snap)
    try:
        shutil.copyfile(src, snap)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT) or str(err.filename) == str(snap):
            raise OutputError(f"cannot write {snap}: {err.strerror}") from None
        raise ConversionError(f"{role} {src}: cannot be read ({err.strerror})") from None
    try:
        image = read_image(snap, role)
    except InputError as err:  # name the source, not our copy
        raise ConversionError(str(err).replace(str(snap), str(src))) from None
    return Volume(image, src, "nifti"), snap


def _place_copy(snap: Path, dest: Path) -> None:
    """The checked copy becomes the staged file: moved if gzip already, else gzip-compressed
    (deterministic: mtime 0 in the gzip header)."""
    with open(snap, "rb") as fh:
        magic = fh.read(2)
    if magic == GZIP_MAGIC:
        snap.replace(dest)
        return
    with atomic_path(dest) as tmp:
        with open(snap, "rb") as fi, open(tmp, "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL, mtime=0) as fo:
            shutil.copyfileobj(fi, fo, 1 << 22)


def _write(image: sitk.Image, snap: Path | None, changed: bool, dest: Path) -> str:
    try:
        if snap is not None and not changed:
            _place_copy(snap, dest)
            return "copied"
        with atomic_path(dest) as tmp:
            sitk.WriteImage(image, str(tmp), useCompression=True)
    except (OSError, RuntimeError) as err:
        msg = err.strerror if isinstance(err, OSError) else sitk_message(err)
        raise OutputError(f"cannot write {dest}: {msg}") from None
    return "written"


def _from_array(arr: np.ndarray, ref: sitk.Image) -> sitk.Image:
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(ref)
    return out


def _brain_step(task: CaseTask, image: sitk.Image, mask: sitk.Image | None, warnings: list[str],
                notes: list[str]) -> tuple[sitk.Image, sitk.Image, dict[str, Any]]:
    """Skull stripping: the CT with the fill outside its intracranial mask (unchanged when the mask is
    passed through), the mask, and what the case record keeps. Reference voxels outside the mask are
    counted and reported, the label itself is not changed."""
    steps = task.options.input_steps
    try:
        stripped = skull_strip(image, steps.brain_mask, steps.fill, task.case_id)
    except ValueError as err:
        raise ConversionError(f"image {task.image}: {err}") from None
    for w in stripped.warnings:
        w = f"{w}; the CT is converted unmasked"
        warnings.append(w)
        notes.append(w)
    info: dict[str, Any] = {"intracranial_ml": stripped.volume_ml, "brain_passed_through": stripped.passed_through,
                            "brain_fill": stripped.fill, "hemorrhage_outside_brain_voxels": None,
                            "hemorrhage_outside_brain_ml": None}
    if mask is not None:
        outside = int(np.count_nonzero((sitk.GetArrayViewFromImage(mask) > 0)
                                       & (sitk.GetArrayViewFromImage(stripped.mask) == 0)))
        ml = round(outside * math.prod(image.GetSpacing()) / 1000.0, 6)
        info.update(hemorrhage_outside_brain_voxels=outside, hemorrhage_outside_brain_ml=ml)
        if outside:
            w = (f"{task.case_id}: {outside} reference hemorrhage voxel(s) ({ml:.3f} mL) lie outside the brain "
                 f"mask, where the CT now reads {stripped.fill:g}; the label is kept unchanged")
            warnings.append(w)
            notes.append(w)
    return stripped.image, stripped.mask, info


def _process_case(task: CaseTask, snaps: list[Path]) -> dict[str, Any]:
    opts = task.options
    notes: list[str] = []
    warnings: list[str] = []
    allowed = {v for _, v in opts.labels}
    img_v, img_snap = _read_staged(task.image, Path(task.staged_image), "image", snaps)
    image = img_v.image
    notes.extend(img_v.notes)
    check_volume(image, img_v.path, "image")
    lo, hi = check_image_values(sitk.GetArrayViewFromImage(image), img_v.path)
    units = ct_units_warning(lo, hi, img_v.path)
    if units:
        warnings.append(units)
        notes.append(units)
    image_changed = False

    mask = m_v = m_snap = None
    mask_changed = False
    labels_present: list[int] = []
    if task.mask and task.staged_label:
        m_v, m_snap = _read_staged(task.mask, Path(task.staged_label), "mask", snaps)
        mask = m_v.image
        notes.extend(f"mask: {n}" for n in m_v.notes)
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

    brain_info: dict[str, Any] = {}
    brain = None
    if opts.input_steps.brain_mask is not None:
        stripped, brain, brain_info = _brain_step(task, image, mask, warnings, notes)
        image_changed = image_changed or stripped is not image
        image = stripped

    fg = 0
    volume_ml = None
    if mask is not None:
        fg = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
        volume_ml = round(fg * math.prod(image.GetSpacing()) / 1000.0, 6)
    how_img = _write(image, img_snap, image_changed, Path(task.staged_image))
    how_mask = None
    if mask is not None and task.staged_label:
        how_mask = _write(mask, m_snap, mask_changed, Path(task.staged_label))
    try:
        for p in task.staged_channels:
            link_or_copy(Path(task.staged_image), Path(p))
        if brain is not None and task.staged_brain:
            write_image(brain, task.staged_brain)
    except OSError as err:
        raise OutputError(f"cannot write {err.filename}: {err.strerror}") from None
    return {
        "ok": True, "case_id": task.case_id, "reason": "", "notes": notes, "warnings": warnings,
        "volume_ml": volume_ml, "foreground_voxels": fg if mask is not None else None,
        "labels_present": labels_present,
        "size": "x".join(map(str, image.GetSize())),
        "spacing": "x".join(f"{s:.6g}" for s in image.GetSpacing()),
        "pixel_type": image.GetPixelIDTypeAsString(),
        "orientation": orientation_code(image),
        "image_written": how_img, "label_written": how_mask, **brain_info,
    }


def convert_case(task: CaseTask) -> dict[str, Any]:
    """Check and stage one case; never raises. A defect of the case comes back as ``ok=False`` with the
    reason; a failure to write the staging folder as ``fatal`` (the run must stop, not skip cases)."""
    warn = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # our own checks report geometry problems
    snaps: list[Path] = []
    try:
        return _process_case(task, snaps)
    except Exception as err:  # noqa: BLE001 - a bug or an odd file must not lose the other cases
        for p in (task.staged_image, task.staged_label, task.staged_brain, *task.staged_channels):  # no half case
            if p:
                Path(p).unlink(missing_ok=True)
        if isinstance(err, OutputError):
            return {"ok": False, "case_id": task.case_id, "reason": str(err), "notes": [], "fatal": True}
        detail = sitk_message(err) if isinstance(err, RuntimeError) else str(err)
        reason = (str(err) if isinstance(err, ConversionError) else
                  f"unexpected error while converting {task.image}: {type(err).__name__}: {detail}")
        return {"ok": False, "case_id": task.case_id, "reason": reason, "notes": []}
    finally:
        for p in snaps:
            p.unlink(missing_ok=True)
        sitk.ProcessObject.SetGlobalWarningDisplay(warn)
