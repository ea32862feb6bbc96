"""Per-case input checks. Each failure names the offending file and the problem.

A :class:`ConversionError` skips the case (reported with its reason) or, with ``strict``,
fails the conversion. It subclasses ``ValueError`` so the CLI prints it as a clean error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_iph.imageio import InputError, sitk_message  # noqa: F401  (re-used by the converters)

#: label values the converted masks may contain (nnU-Net needs consecutive integers from 0)
DEFAULT_LABELS = {"background": 0, "hemorrhage": 1}


class ConversionError(InputError):
    """A defect in one input case (or the manifest); the message names file and problem."""


def fmt_size(image: sitk.Image) -> str:
    return "x".join(str(s) for s in image.GetSize())


def check_volume(image: sitk.Image, path: Path | str, role: str) -> None:
    """Reject what nnU-Net's 3D head-CT pipeline cannot use: 2D, 4D, vector or empty volumes."""
    dim = image.GetDimension()
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ConversionError(f"{role} {path}: has {image.GetNumberOfComponentsPerPixel()} components "
                              f"per voxel (vector/RGB image); expected a scalar 3D volume")
    if dim == 2:
        raise ConversionError(f"{role} {path}: is 2D (size {fmt_size(image)}); expected a 3D volume")
    if dim != 3:
        raise ConversionError(f"{role} {path}: is {dim}D (size {fmt_size(image)}); expected a 3D volume "
                              f"(split time points/channels into separate files)")
    size = image.GetSize()
    if 0 in size:
        raise ConversionError(f"{role} {path}: is empty (size {fmt_size(image)})")
    if 1 in size:
        raise ConversionError(f"{role} {path}: has a single slice (size {fmt_size(image)}), i.e. a 2D "
                              f"image; expected a 3D volume")


def check_image_values(arr: np.ndarray, path: Path | str) -> tuple[float, float]:
    """NaN/inf and constant images are defects (constant = blank export or failed reconstruction)."""
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        n_nan = int(np.isnan(arr).sum())
        n_inf = int(np.isinf(arr).sum())
        raise ConversionError(f"image {path}: contains {n_nan} NaN and {n_inf} infinite voxel values")
    lo, hi = arr.min(), arr.max()
    if lo == hi:
        raise ConversionError(f"image {path}: is constant (every voxel = {lo.item()!r})")
    return float(lo), float(hi)


def check_mask_values(arr: np.ndarray, path: Path | str, allowed: set[int],
                      merge_labels: bool = False) -> tuple[np.ndarray | None, list[int]]:
    """Mask values must be integers in ``allowed``. Returns (replacement array or None, labels present).

    With ``merge_labels`` every positive integer label becomes 1 (e.g. subtype masks -> any ICH);
    the replacement array is then returned (uint8).
    """
    kind = arr.dtype.kind
    if kind == "f":
        if not np.isfinite(arr).all():
            raise ConversionError(f"mask {path}: contains NaN or infinite values")
        frac = arr != np.round(arr)
        if frac.any():
            bad = np.unique(arr[frac])[:5]
            raise ConversionError(f"mask {path}: has non-integer label values (e.g. "
                                  f"{', '.join(f'{v:g}' for v in bad)}); expected integer labels "
                                  f"{sorted(allowed)}")
    elif kind not in "iub":
        raise ConversionError(f"mask {path}: has unsupported pixel type {arr.dtype}")
    lo, hi = arr.min(), arr.max()
    if lo >= min(allowed) and hi <= max(allowed) and set(range(int(lo), int(hi) + 1)) <= allowed:
        if hi - lo <= 1:  # the common 0/1 case: no need for a full np.unique pass
            return None, sorted({int(lo), int(hi)})
        return None, sorted(int(v) for v in np.unique(arr))
    values = sorted(int(v) for v in np.unique(arr))
    unexpected = [v for v in values if v not in allowed]
    if merge_labels and all(v >= 0 for v in values):
        out = (arr > 0).astype(np.uint8)
        return out, sorted({0 if v == 0 else 1 for v in values})
    if not unexpected:
        return None, values
    hint = (" (pass --merge-labels to map every positive label to 1)"
            if all(v >= 0 for v in values) else "")
    raise ConversionError(f"mask {path}: has unexpected label values {unexpected[:10]}; expected only "
                          f"{sorted(allowed)}{hint}")


#: a head CT in Hounsfield units always has values below these: air (~-1000 HU) around the head, and
#: even a brain window clipped at its lower edge keeps negative values (PhysioNet CT-ICH: [-20, 100])
HU_SCALED_RANGE = (-2.0, 4.0)  # HU/1000 (air -1, bone up to ~3) or intensities normalised to [0, 1]
EIGHT_BIT_MAX = 255.0


def ct_units_warning(lo: float, hi: float, path: Path | str) -> str | None:
    """A warning when an image's intensity range cannot be CT in HU (None when it can).

    Heuristic on the range only: the whole range within [-2, 4] -> HU/1000 or normalised; no negative
    value and max <= 255 -> an 8-bit windowed export (display values, not HU); no negative value
    above that -> stored values without the rescale intercept (e.g. HU + 1024). Such scans are still
    converted (the user may know better), but a model trained on HU would see other intensities.
    """
    rng = f"intensity range {lo:g} to {hi:g}"
    if HU_SCALED_RANGE[0] <= lo and hi <= HU_SCALED_RANGE[1]:
        why = f"whole range within [{HU_SCALED_RANGE[0]:g}, {HU_SCALED_RANGE[1]:g}]: looks like HU/1000 or normalised"
    elif lo >= 0 and hi <= EIGHT_BIT_MAX:
        why = "no negative value and max <= 255: looks like an 8-bit windowed export"
    elif lo >= 0:
        why = "no negative value (air would be about -1000 HU): looks like stored values without the rescale intercept"
    else:
        return None
    return f"image {path}: {rng} ({why}), not Hounsfield units; converted unchanged"


@dataclass
class GeometryDiff:
    """Largest differences between two grids (mm for spacing/origin, cosines for direction)."""

    size_equal: bool
    spacing: float
    origin: float
    direction: float

    def within(self, tol: float) -> bool:
        return self.size_equal and max(self.spacing, self.origin, self.direction) <= tol

    @property
    def exact(self) -> bool:
        return self.size_equal and self.spacing == 0 and self.origin == 0 and self.direction == 0


def geometry_diff(a: sitk.Image, b: sitk.Image) -> GeometryDiff:
    return GeometryDiff(
        size_equal=a.GetSize() == b.GetSize(),
        spacing=float(np.max(np.abs(np.subtract(a.GetSpacing(), b.GetSpacing())))),
        origin=float(np.max(np.abs(np.subtract(a.GetOrigin(), b.GetOrigin())))),
        direction=float(np.max(np.abs(np.subtract(a.GetDirection(), b.GetDirection())))),
    )


def describe_mismatch(image: sitk.Image, mask: sitk.Image, diff: GeometryDiff, tol: float) -> str:
    parts = []
    if not diff.size_equal:
        parts.append(f"size {fmt_size(mask)} vs image {fmt_size(image)}")
    if diff.spacing > tol:
        parts.append(f"spacing {tuple(round(s, 6) for s in mask.GetSpacing())} vs image "
                     f"{tuple(round(s, 6) for s in image.GetSpacing())} (differs by {diff.spacing:.3g} mm)")
    if diff.origin > tol:
        parts.append(f"origin differs by {diff.origin:.3g} mm")
    if diff.direction > tol:
        parts.append(f"direction cosines differ by {diff.direction:.3g}")
    return "; ".join(parts)
