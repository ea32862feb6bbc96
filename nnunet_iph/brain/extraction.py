"""Intracranial mask of a head CT: the cavity the skull encloses, so that epidural and subdural blood
next to the inner table is inside.

Why this algorithm (and not a per-slice "fill inside the bone ring"): the ring is open at the skull
base (foramina, orbits), at fractures and craniectomies, and in the clipped PhysioNet copy bone is
indistinguishable from anything else above 100 HU. The steps, all on axial slices at ~1.5 mm:

1. bone = voxels at or above the bone threshold (100 HU where the data are clipped there, else
   160 HU: above any blood), closed in-plane to seal sutures and thin gaps;
2. candidate = soft tissue (above ``soft_min_hu``) that is not bone;
3. cut the thin bridges to the scalp, orbits and neck by an in-plane erosion, keep the largest 3D
   piece, and grow it back (geodesic reconstruction inside the candidate);
4. on each slice keep only the pieces whose outline runs mostly along bone: neck and face soft
   tissue reached through the foramen magnum is not enclosed by skull;
5. fill holes per slice, grow ``grow_mm`` into the inner table (blood against the bone reads as
   bone in clipped data), and map back to the full grid.

Everything that cannot be a head CT in HU (no air, no skull, 8-bit or MR-like ranges) or gives an
implausible volume is reported and passed through (an all-ones mask), never masked silently.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from nnunet_iph.brain.settings import BrainMaskSettings
from nnunet_iph.planning.orientation import PLANE_NORMAL, physical_axes_of_array

#: values at or above this in a volume whose maximum is <= CLIPPED_MAX mark bone (clipped data)
CLIPPED_MAX = 100.0
#: a huge spacing along the slice axis makes the distance transforms act in-plane only
_IN_PLANE = 1e9


@dataclass
class BrainMaskResult:
    mask: sitk.Image  # uint8 {0, 1} on the CT's grid; all ones when passed through
    volume_ml: float | None  # None when passed through
    passed_through: bool
    warnings: list[str] = field(default_factory=list)  # what was wrong and what was done
    notes: list[str] = field(default_factory=list)  # how the data were read (e.g. clipped HU)
    seconds: float = 0.0


def _axial_first(direction) -> tuple[list[int], list[int]]:
    """Array transpose that puts the axial slicing axis first, and its inverse."""
    mapping = physical_axes_of_array(direction)
    axial = list(mapping).index(PLANE_NORMAL["axial"])
    forward = [axial] + [a for a in range(3) if a != axial]
    return forward, [forward.index(a) for a in range(3)]


def _largest(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n <= 1:
        return mask if n else np.zeros_like(mask)
    sizes = np.bincount(lab.ravel())[1:]
    return lab == 1 + int(np.argmax(sizes))


def _intensity_problem(arr: np.ndarray, bone_hu: float, soft_min_hu: float) -> str | None:
    """Why ``arr`` does not look like head CT in HU, or None."""
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0:
        kind = "8-bit windowed" if hi <= 255 else "MR-like"
        return f"intensities {lo:g}..{hi:g} have no negative values (air is -1000 HU): {kind}, not HU"
    if hi - lo < 50:
        return f"intensity range {lo:g}..{hi:g} is too narrow for HU (scaled, e.g. HU/1000?)"
    if (arr <= soft_min_hu).mean() < 0.02:
        return f"no air around the head (fewer than 2 % of voxels <= {soft_min_hu:g} HU)"
    if (arr >= bone_hu).mean() < 0.002:
        return f"no skull in the field of view (fewer than 0.2 % of voxels >= {bone_hu:g} HU)"
    return None


def _mask_axial(arr: np.ndarray, spacing: tuple[float, float, float], s: BrainMaskSettings,
                bone_hu: float) -> np.ndarray:
    """Steps 1-5 on an axial-first array (z, y, x) with spacing (z, y, x) in mm."""
    sz, sy, sx = spacing
    f = max(1, int(round(s.work_spacing_mm / min(sy, sx))))
    nz, ny, nx = arr.shape
    cy, cx = ny // f * f, nx // f * f
    blocks = arr[:, :cy, :cx].reshape(nz, cy // f, f, cx // f, f)
    bone = (blocks >= bone_hu).mean(axis=(2, 4)) > 0.25
    soft = ((blocks > s.soft_min_hu) & (blocks < bone_hu)).mean(axis=(2, 4)) > 0.5
    plane = (_IN_PLANE, sy * f, sx * f)

    def within(mask: np.ndarray, mm: float) -> np.ndarray:  # in-plane dilation by mm
        return ndi.distance_transform_edt(~mask, sampling=plane) <= mm

    def inner(mask: np.ndarray, mm: float) -> np.ndarray:  # in-plane erosion by mm
        return ndi.distance_transform_edt(mask, sampling=plane) > mm

    bone = inner(within(bone, s.close_mm), s.close_mm - 1e-6) | bone
    candidate = soft & ~bone
    core = _largest(inner(candidate, s.cut_mm))
    cavity = _largest(within(core, s.cut_mm + sy * f) & candidate)
    near_bone = within(bone, s.contact_mm)
    for z in range(nz):
        lab, n = ndi.label(cavity[z])
        if n == 0:
            continue
        edge = cavity[z] & ~ndi.binary_erosion(cavity[z])
        index = np.arange(1, n + 1)
        outline = ndi.sum_labels(edge, lab, index)
        on_bone = ndi.sum_labels(edge & near_bone[z], lab, index)
        loose = index[on_bone < s.min_bone_contact * np.maximum(outline, 1)]
        if loose.size:
            cavity[z][np.isin(lab, loose)] = False
    cavity = _largest(cavity)
    cavity = np.stack([ndi.binary_fill_holes(sl) for sl in cavity])
    cavity = within(cavity, s.grow_mm)
    full = np.zeros(arr.shape, bool)
    full[:, :cy, :cx] = cavity.repeat(f, axis=1).repeat(f, axis=2)
    return full


def intracranial_mask(image: sitk.Image, settings: BrainMaskSettings = BrainMaskSettings(),
                      case: str = "") -> BrainMaskResult:
    """The intracranial mask of ``image`` on its own grid (same size, spacing, origin, direction)."""
    t0 = time.perf_counter()
    name = f"{case}: " if case else ""
    arr = sitk.GetArrayFromImage(image)
    notes: list[str] = []
    warnings: list[str] = []
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{name}expected a scalar 3D CT, got {image.GetDimension()}D with "
                         f"{image.GetNumberOfComponentsPerPixel()} component(s)")
    bone_hu = settings.bone_hu
    if float(arr.max()) <= CLIPPED_MAX:
        bone_hu = float(arr.max())
        notes.append(f"intensities clipped at {bone_hu:g} HU: bone threshold {bone_hu:g} HU")
    problem = _intensity_problem(arr, bone_hu, settings.soft_min_hu)
    mask = None
    if problem is None:
        forward, backward = _axial_first(image.GetDirection())
        spacing = tuple(image.GetSpacing()[::-1][a] for a in forward)
        mask = _mask_axial(arr.transpose(forward), spacing, settings, bone_hu).transpose(backward)
        volume = float(mask.sum()) * float(np.prod(image.GetSpacing())) / 1000.0
        if not settings.min_volume_ml <= volume <= settings.max_volume_ml:
            problem = (f"intracranial volume {volume:.0f} mL outside the plausible "
                       f"{settings.min_volume_ml:g}-{settings.max_volume_ml:g} mL")
    if problem is not None:
        warnings.append(f"{name}{problem} -> passed through (no masking)")
        out = np.ones(arr.shape, np.uint8)
        volume_ml = None
    else:
        out = mask.astype(np.uint8)
        volume_ml = round(volume, 3)
    result = sitk.GetImageFromArray(out)
    result.CopyInformation(image)
    return BrainMaskResult(result, volume_ml, problem is not None, warnings, notes, time.perf_counter() - t0)
