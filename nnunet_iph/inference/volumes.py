"""One volumes.csv row per label map: hemorrhage volume, lesions, ABC/2 of the largest lesion.

mL = voxel count x voxel volume in the mask's own geometry (the input's geometry for predictions).
Hemorrhage = every label > 0. Pure SimpleITK + numpy/scipy: no torch, usable on any folder of masks
(``nnunet-iph volumes``). ABC/2 conventions: :mod:`nnunet_iph.inference.abc2`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import SimpleITK as sitk

from nnunet_iph.imageio import InputError, read_image
from nnunet_iph.inference.abc2 import summarize_lesions

#: the per-case columns, in this order; per-label ``<name>_ml`` and the provenance columns follow
VOLUME_COLUMNS = ("case", "mask", "hemorrhage_ml", "n_lesions", "largest_lesion_ml", "abc2_ml", "abc2_a_mm",
                  "abc2_b_mm", "abc2_c_mm", "abc2_slice", "intracranial_ml", "n_voxels", "voxel_ml")
PROVENANCE_COLUMNS = ("model", "pipeline", "nnunet_iph_version")
#: more distinct values than this and the image is taken for an intensity image, not a label map
MAX_LABELS = 64


def check_label_map(image: sitk.Image, path: str | os.PathLike, role: str = "mask") -> np.ndarray:
    """The voxels (z, y, x) of a 3D label map; :class:`InputError` naming the file for anything else
    (a CT given by mistake: negative, fractional or too many distinct values)."""
    where = f"{role} {path}"
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{where}: not a label image ({image.GetDimension()}D, "
                         f"{image.GetNumberOfComponentsPerPixel()} component(s) per voxel; expected 3D scalar)")
    arr = sitk.GetArrayViewFromImage(image)
    if arr.size == 0:
        raise InputError(f"{where}: empty image (size {image.GetSize()})")
    lo, hi = arr.min(), arr.max()
    if arr.dtype.kind == "f" and not np.array_equal(arr, np.round(arr)):
        raise InputError(f"{where}: not a label image (pixel type {image.GetPixelIDTypeAsString()} with "
                         "non-integer values; is it a CT or a probability map?)")
    if lo < 0 or hi > 10_000:
        raise InputError(f"{where}: not a label image (values {lo:g} to {hi:g}; labels are 0, 1, 2, ...; "
                         "is it a CT?)")
    n_values = int(np.count_nonzero(np.bincount(arr.ravel().astype(np.int64)))) if hi > MAX_LABELS else 0
    if n_values > MAX_LABELS:
        raise InputError(f"{where}: not a label image ({n_values} distinct values, at most {MAX_LABELS} "
                         "expected; is it a CT?)")
    return arr


def read_label_map(path: str | os.PathLike, role: str = "mask") -> tuple[sitk.Image, np.ndarray]:
    image = read_image(path, role)
    return image, check_label_map(image, path, role)


def same_grid(a: sitk.Image, b: sitk.Image) -> list[str]:
    """How the voxel grids of two images differ (empty: same grid)."""
    if a.GetSize() != b.GetSize():
        return [f"size {b.GetSize()} != {a.GetSize()}"]
    checks = (("spacing", a.GetSpacing(), b.GetSpacing(), 1e-4), ("origin", a.GetOrigin(), b.GetOrigin(), 1e-3),
              ("direction", a.GetDirection(), b.GetDirection(), 1e-4))
    return [f"{name} {np.round(y, 4).tolist()} != {np.round(x, 4).tolist()}"
            for name, x, y, tol in checks if not np.allclose(x, y, rtol=0, atol=tol)]


def volume_row(image: sitk.Image, arr: np.ndarray, labels: Mapping[str, Any] | None = None,
               brain: tuple[sitk.Image, np.ndarray, Path] | None = None, where: str = "mask") -> dict[str, Any]:
    """The volume columns of one label map (everything but case, mask name and provenance).

    ``brain``: (image, voxels, path) of a brain / intracranial mask on the same grid -> ``intracranial_ml``
    (empty when the mask covers every voxel: ``nnunet-iph brain-mask`` passed that scan through).
    ``where`` names the mask in error messages (an oblique direction matrix has no axial slices).
    """
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
    try:
        s = summarize_lesions(arr, image.GetSpacing(), image.GetDirection())
    except ValueError as err:
        raise InputError(f"{where}: {err}") from None
    abc = s.abc2
    row: dict[str, Any] = {
        "hemorrhage_ml": round(s.total_voxels * voxel_ml, 6), "n_lesions": s.n_lesions,
        "largest_lesion_ml": round(s.largest_voxels * voxel_ml, 6),
        "abc2_ml": round(abc.ml, 6) if abc else 0.0,
        "abc2_a_mm": round(abc.a_mm, 3) if abc else 0.0, "abc2_b_mm": round(abc.b_mm, 3) if abc else 0.0,
        "abc2_c_mm": round(abc.c_mm, 3) if abc else 0.0, "abc2_slice": abc.slice_index if abc else None,
        "intracranial_ml": None, "n_voxels": s.total_voxels, "voxel_ml": voxel_ml}
    if brain is not None:
        b_img, b_arr, b_path = brain
        problems = same_grid(image, b_img)
        if problems:
            raise InputError(f"brain mask {b_path}: not on the hemorrhage mask's grid: " + "; ".join(problems))
        inside = int(np.count_nonzero(b_arr))
        # a mask of the whole field of view is a pass-through ("no masking"), not an intracranial volume
        row["intracranial_ml"] = round(inside * voxel_ml, 6) if inside < b_arr.size else None
    fg = {k: v for k, v in (labels or {}).items() if isinstance(v, int) and v > 0}
    if len(fg) > 1:
        for name, value in fg.items():
            row[f"{name}_ml"] = round(int(np.count_nonzero(arr == value)) * voxel_ml, 6)
    return row


def mask_volumes(mask_path: str | os.PathLike, labels: Mapping[str, Any] | None = None,
                 brain_mask_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """:func:`volume_row` of a mask file (read and checked through :func:`nnunet_iph.imageio.read_image`)."""
    image, arr = read_label_map(mask_path)
    brain = (*read_label_map(brain_mask_path, "brain mask"), Path(brain_mask_path)) if brain_mask_path else None
    return volume_row(image, arr, labels, brain, f"mask {mask_path}")
