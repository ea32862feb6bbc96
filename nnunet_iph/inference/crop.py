"""Inference on a brain crop (``nnunet-iph predict --brain-crop``): cut each CT to its intracranial
mask's bounding box plus a margin, segment the crop, paste the result back onto the original grid.

Why index space: :func:`crop_image` is SimpleITK's ``RegionOfInterest``, which keeps spacing and
direction and moves the origin to the first kept voxel, so the crop is an exact sub-grid of the
original and pasting is a plain array slice -- no resampling, nothing to round. The pasted mask takes
its geometry from the original image itself (the crop file's header only has to agree with where the
crop was cut; a crop mask that does not is refused rather than pasted somewhere else).

Outside the crop the mask is background; with ``--save-probabilities`` the ``.npz`` holds probability
1 for background (0 for every channel of region-based labels) there, and the ``.pkl`` is rewritten
for the full grid, so re-exporting or ensembling those files lands on the original grid too.
For a model trained on skull-stripped CTs the box comes from the raw CT (with the model's extraction
settings: the mask its inputs were stripped with), and the stripped channels are cropped to it.
A CT whose intracranial mask is passed through (not head CT in HU, implausible volume) or empty is
segmented uncropped; :func:`summary` records which case was cropped and why not (``pipeline.json``).
"""

from __future__ import annotations

import json
import math
import pickle
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_iph.brain.settings import BrainMaskSettings
from nnunet_iph.imageio import atomic_path, read_image, write_image

DEFAULT_MARGIN_MM = 10.0


@dataclass(frozen=True)
class CropBox:
    """A sub-grid of an image: ``index`` (first voxel) and ``size`` in SimpleITK's (i, j, k) order."""

    index: tuple[int, int, int]
    size: tuple[int, int, int]
    full_size: tuple[int, int, int]

    @property
    def slices(self) -> tuple[slice, ...]:
        """The box in numpy's (k, j, i) array order."""
        return tuple(slice(i, i + s) for i, s in zip(self.index[::-1], self.size[::-1]))

    @property
    def voxel_share(self) -> float:
        return float(np.prod(self.size)) / float(np.prod(self.full_size))


def brain_box(mask: sitk.Image, margin_mm: float) -> CropBox | None:
    """Bounding box of ``mask > 0`` grown by ``margin_mm`` per side (whole voxels, rounded up), clipped
    to the image; None for an empty mask."""
    if margin_mm < 0:
        raise ValueError(f"brain-crop margin {margin_mm:g} mm: must be >= 0")
    arr = sitk.GetArrayViewFromImage(mask) > 0
    if not arr.any():
        return None
    full = mask.GetSize()
    index, size = [], []
    for d in range(3):  # SimpleITK axis d is numpy axis 2 - d
        other = tuple(a for a in range(3) if a != 2 - d)
        hit = np.flatnonzero(arr.any(axis=other))
        grow = math.ceil(margin_mm / mask.GetSpacing()[d] - 1e-9)
        lo, hi = max(int(hit[0]) - grow, 0), min(int(hit[-1]) + grow, full[d] - 1)
        index.append(lo)
        size.append(hi - lo + 1)
    return CropBox(tuple(index), tuple(size), tuple(full))


def crop_image(image: sitk.Image, box: CropBox) -> sitk.Image:
    """The sub-grid ``box`` of ``image`` (same spacing and direction, origin at ``box.index``)."""
    if tuple(image.GetSize()) != box.full_size:
        raise ValueError(f"image of size {image.GetSize()} does not match the crop's {box.full_size}")
    return sitk.RegionOfInterest(image, box.size, box.index)


def paste_array(crop: np.ndarray, box: CropBox, fill: np.ndarray | float = 0) -> np.ndarray:
    """``crop`` (shape ``(..., *box.size[::-1]``) placed in a full array; ``fill`` outside (broadcast over
    the leading axes, e.g. one value per probability channel)."""
    lead = crop.shape[:-3]
    full = np.empty(lead + tuple(box.full_size[::-1]), crop.dtype)
    full[...] = np.reshape(fill, np.shape(fill) + (1, 1, 1)) if np.ndim(fill) else fill
    full[(Ellipsis, *box.slices)] = crop
    return full


def paste_image(crop: sitk.Image, box: CropBox, reference: sitk.Image, what: str = "crop") -> sitk.Image:
    """``crop`` (on the sub-grid ``box`` of ``reference``) on ``reference``'s full grid, 0 outside."""
    if tuple(crop.GetSize()) != box.size:
        raise ValueError(f"{what}: size {crop.GetSize()}, the crop was {box.size}")
    spacing = np.asarray(reference.GetSpacing())
    origin = reference.TransformIndexToPhysicalPoint(tuple(int(i) for i in box.index))
    tol = 1e-3 * spacing.min()
    if (not np.allclose(crop.GetSpacing(), spacing, rtol=1e-5, atol=0)
            or not np.allclose(crop.GetDirection(), reference.GetDirection(), atol=1e-5)
            or np.abs(np.subtract(crop.GetOrigin(), origin)).max() > tol):
        raise ValueError(f"{what}: its geometry (origin {crop.GetOrigin()}) is not the crop cut at index "
                         f"{box.index} (origin {origin}); not pasted")
    full = sitk.GetImageFromArray(paste_array(sitk.GetArrayFromImage(crop), box))
    full.CopyInformation(reference)
    return full


@dataclass
class CaseCrop:
    """How one case was cropped: ``box`` None when it was segmented uncropped (``reason``)."""

    box: CropBox | None
    reason: str
    intracranial_ml: float | None
    reference: sitk.Image  # an empty image carrying the original grid (size, spacing, origin, direction)
    seconds: float

    def summary(self) -> dict:
        out = {"cropped": self.box is not None, "reason": self.reason, "intracranial_ml": self.intracranial_ml,
               "seconds": round(self.seconds, 3)}
        if self.box is not None:
            out |= {"index": list(self.box.index), "size": list(self.box.size),
                    "full_size": list(self.box.full_size), "voxel_share": round(self.box.voxel_share, 4)}
        return out


def _grid_of(image: sitk.Image) -> sitk.Image:
    ref = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    ref.CopyInformation(image)
    return ref


def _same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    tol = 1e-3 * min(a.GetSpacing())
    return (a.GetSize() == b.GetSize() and np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-5, atol=0)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-5)
            and np.abs(np.subtract(a.GetOrigin(), b.GetOrigin())).max() <= tol)


def crop_cases(cases: dict[str, list[str]], staging: Path, margin_mm: float, file_ending: str,
               mask_from: dict[str, str] | None = None,
               settings: BrainMaskSettings | None = None) -> tuple[dict[str, list[str]], dict[str, CaseCrop]]:
    """Intracranial mask -> every channel cropped to its box under ``staging``. Returns the files to
    segment (crops, or the originals where not cropped) and each case's :class:`CaseCrop`.

    ``mask_from``: per case the CT the mask is found on (default: the case's channel 0), on channel 0's
    grid -- the raw CT when the channels are skull-stripped model inputs, whose mask the stripped CT no
    longer shows (its skull is gone). ``settings``: the extraction's (the model's recorded ones, so the
    box holds exactly the stripped region)."""
    from nnunet_iph.brain.extraction import intracranial_mask

    if margin_mm < 0:
        raise ValueError(f"--brain-crop {margin_mm:g}: the margin (mm) must be >= 0")
    staging.mkdir(parents=True, exist_ok=True)
    # uncompressed NIfTI: the crops are read once, right away (gzip would cost more than it saves)
    ending = ".nii" if file_ending in (".nii.gz", ".nii") else file_ending
    files_out, crops = {}, {}
    for case, files in cases.items():
        t = time.perf_counter()
        images = [read_image(f, "input image") for f in files]
        for f, img in zip(files[1:], images[1:]):
            if img.GetSize() != images[0].GetSize():
                raise ValueError(f"input image {f}: size {img.GetSize()}, channel 0 has {images[0].GetSize()}")
        source = images[0]
        if mask_from is not None and mask_from[case] != files[0]:
            source = read_image(mask_from[case], "input image")
            if not _same_grid(source, images[0]):
                raise ValueError(f"input image {mask_from[case]}: not on the grid of the model input {files[0]} "
                                 f"(size {source.GetSize()} vs {images[0].GetSize()}); its brain mask cannot crop it")
        result = intracranial_mask(source, settings or BrainMaskSettings(), case=case)
        box = None if result.passed_through else brain_box(result.mask, margin_mm)
        reason = ("intracranial mask passed through: " + "; ".join(result.warnings) if result.passed_through
                  else "empty intracranial mask" if box is None else "cropped")
        if box is None:
            files_out[case] = list(files)
        else:
            files_out[case] = [str(write_image(crop_image(img, box), staging / f"{case}_{c:04d}{ending}",
                                               compress=False)) for c, img in enumerate(images)]
        crops[case] = CaseCrop(box, reason, result.volume_ml, _grid_of(images[0]), time.perf_counter() - t)
    return files_out, crops


def _has_regions(dataset_json: dict) -> bool:
    return any(isinstance(v, (list, tuple)) and len(v) > 1 for v in dataset_json.get("labels", {}).values())


def paste_folder(folder: Path, crops: dict[str, CaseCrop], file_ending: str) -> None:
    """Every cropped case's mask in ``folder`` (and ``.npz`` / ``.pkl`` where present) back on its original
    grid, replacing the crop's files (each written atomically)."""
    plans = json.loads((folder / "plans.json").read_text(encoding="utf-8")) if (folder / "plans.json").is_file() else {}
    dataset = json.loads((folder / "dataset.json").read_text(encoding="utf-8")) \
        if (folder / "dataset.json").is_file() else {}
    transpose = plans.get("transpose_forward", [0, 1, 2])
    for case, crop in crops.items():
        if crop.box is None:
            continue
        mask_file = folder / f"{case}{file_ending}"
        pasted = paste_image(read_image(mask_file, "predicted mask"), crop.box, crop.reference, str(mask_file))
        write_image(pasted, mask_file)
        npz = folder / f"{case}.npz"
        if npz.is_file():
            probs = np.load(npz)["probabilities"]
            fill = np.zeros(probs.shape[0], probs.dtype)
            if not _has_regions(dataset):
                fill[0] = 1
            with atomic_path(npz) as tmp:
                np.savez_compressed(tmp, probabilities=paste_array(probs, crop.box, fill))
        pkl = folder / f"{case}.pkl"
        if pkl.is_file():
            _paste_properties(pkl, crop, transpose)


def _paste_properties(pkl: Path, crop: CaseCrop, transpose: list[int]) -> None:
    """nnU-Net's per-case properties of the crop -> those of the full image (same data, shifted box)."""
    with open(pkl, "rb") as f:
        props = pickle.load(f)
    ref = crop.reference
    props["sitk_stuff"] = {"spacing": ref.GetSpacing(), "origin": ref.GetOrigin(), "direction": ref.GetDirection()}
    full_np = ref.GetSize()[::-1]
    offset_np = crop.box.index[::-1]
    props["shape_before_cropping"] = tuple(full_np[a] for a in transpose)  # nnU-Net's boxes: transposed order
    props["bbox_used_for_cropping"] = [[lo + offset_np[a], hi + offset_np[a]]
                                       for (lo, hi), a in zip(props["bbox_used_for_cropping"], transpose)]
    with atomic_path(pkl) as tmp, open(tmp, "wb") as f:
        pickle.dump(props, f)


def summary(crops: dict[str, CaseCrop], margin_mm: float) -> dict:
    """The ``pipeline.json`` entry: margin, and per case whether (and where) it was cropped."""
    return {"margin_mm": margin_mm, "cases": {c: k.summary() for c, k in crops.items()}}


def check_models(models, save_probabilities: bool) -> None:
    """Refuse before any work what could not be pasted: ``.pkl`` properties of a reader other than
    SimpleITKIO (their geometry fields differ)."""
    if not save_probabilities:
        return
    for m in models:
        reader = m.plans().get("image_reader_writer", "SimpleITKIO")
        if reader != "SimpleITKIO":
            raise ValueError(f"{m.folder}: --brain-crop with --save-probabilities needs a model reading images "
                             f"with SimpleITKIO (its plans: {reader})")
