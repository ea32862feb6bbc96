"""Lesions of a hemorrhage mask and the ABC/2 bedside estimate of the largest one (Kothari 1996).

Conventions (docs/volumes-and-qc.md):

- lesions are the 26-connected components of every label > 0; the largest is the one with most voxels;
- "axial" slices are taken along the array axis that follows the S-I axis of the direction matrix
  (:func:`nnunet_iph.planning.orientation.physical_axes_of_array`), so a scan stored coronally or
  with permuted axes is still measured on its axial slices; the voxel grid itself is orthogonal, so
  in-plane distances are exact with the two in-plane spacings (anisotropic allowed);
- the slice used for A and B is the one where the largest lesion has most voxels (the lowest slice
  index on a tie);
- **A** = the largest distance between two points of the lesion on that slice, where the lesion is
  the union of its pixel squares: the maximum pairwise distance between the *voxel corners* of its
  convex hull. A box of a x b mm (whole pixels) therefore has A = sqrt(a^2 + b^2), a single pixel
  the pixel diagonal;
- **B** = the width of the lesion perpendicular to A on the same slice (the caliper width: extent
  of the hull projected on the in-plane direction perpendicular to A). A box a x b has
  B = 2ab / sqrt(a^2 + b^2), an ellipse with axes 2ra > 2rb has B = 2rb;
- **C** = slice thickness x sum of slice weights over the slices with the lesion: 1 when the slice's
  lesion area is >= 75 % of the largest slice's area, 0.5 for 25 % <= area < 75 %, 0 below 25 %;
- ABC/2 (mL) = A x B x C / 2 / 1000.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull

from nnunet_iph.planning.orientation import physical_axes_of_array

#: 26-connectivity in 3D
FULL_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)
#: (minimum area ratio to the largest slice, weight), checked in order
C_WEIGHTS = ((0.75, 1.0), (0.25, 0.5))


@dataclass(frozen=True)
class ABC2:
    a_mm: float
    b_mm: float
    c_mm: float
    slice_index: int  # index of the A/B slice along the axial array axis

    @property
    def ml(self) -> float:
        return self.a_mm * self.b_mm * self.c_mm / 2.0 / 1000.0


@dataclass(frozen=True)
class LesionSummary:
    n_lesions: int
    total_voxels: int
    largest_voxels: int
    abc2: ABC2 | None  # None when the mask is empty


def axial_axis(direction: Sequence[float] | np.ndarray) -> int:
    """The numpy array axis (of ``sitk.GetArrayFromImage``) that crosses the axial slices.

    Only this axis has to be clear: a scan rotated in-plane (even by 45 degrees) still has axial slices.
    """
    try:
        return physical_axes_of_array(direction).index(2)
    except ValueError:
        pass
    z = np.abs(np.asarray(direction, dtype=float).reshape(3, 3)[2, ::-1])  # S-I component per numpy axis
    order = np.argsort(z)[::-1]
    if z[order[0]] - z[order[1]] < 0.05:
        raise ValueError(f"no array axis follows the S-I axis (direction {np.round(direction, 3).tolist()}): "
                         "the slices are not axial; reorient/resample the image first")
    return int(order[0])


def label_lesions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected components of ``mask > 0``: (label array, count)."""
    labels, n = ndimage.label(mask > 0, structure=FULL_CONNECTIVITY)
    return labels, int(n)


def slice_weight(ratio: float) -> float:
    """Kothari's weight of one slice from its lesion area relative to the largest slice's."""
    for threshold, weight in C_WEIGHTS:
        if ratio >= threshold:
            return weight
    return 0.0


def _corner_points(section: np.ndarray, spacing_rc: tuple[float, float]) -> np.ndarray:
    """Physical (mm) corners of the outermost pixels of each row: their hull is the hull of all pixels."""
    rows = np.flatnonzero(section.any(axis=1))
    pts = []
    for r in rows:
        cols = np.flatnonzero(section[r])
        for c in (cols[0], cols[-1] + 1):
            pts.extend(((r, c), (r + 1, c)))
    return np.asarray(pts, dtype=float) * np.asarray(spacing_rc, dtype=float)


def diameters(section: np.ndarray, spacing_rc: tuple[float, float]) -> tuple[float, float]:
    """(A, B) in mm of a 2D binary section: the longest corner-to-corner distance of its convex hull
    and the hull's width perpendicular to that direction."""
    pts = _corner_points(section, spacing_rc)
    hull = pts[ConvexHull(pts).vertices]
    d2 = ((hull[:, None, :] - hull[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(np.argmax(d2)), d2.shape)
    a = float(np.sqrt(d2[i, j]))
    u = (hull[j] - hull[i]) / a
    proj = hull @ np.array([-u[1], u[0]])
    return a, float(proj.max() - proj.min())


def abc2(lesion: np.ndarray, spacing_xyz: Sequence[float], direction: Sequence[float] | np.ndarray) -> ABC2:
    """ABC/2 of one binary lesion given as a numpy (z, y, x) array with SimpleITK spacing/direction."""
    axis = axial_axis(direction)
    spacing_arr = tuple(float(s) for s in spacing_xyz)[::-1]  # numpy axis order
    in_plane = tuple(spacing_arr[a] for a in range(3) if a != axis)
    stack = np.moveaxis(lesion > 0, axis, 0)
    areas = stack.reshape(stack.shape[0], -1).sum(axis=1)
    if not areas.any():
        raise ValueError("ABC/2 of an empty lesion")
    k = int(np.argmax(areas))
    a, b = diameters(stack[k], in_plane)  # type: ignore[arg-type]
    weights = sum(slice_weight(n / areas[k]) for n in areas if n)
    return ABC2(a, b, weights * spacing_arr[axis], k)


def summarize_lesions(mask: np.ndarray, spacing_xyz: Sequence[float],
                      direction: Sequence[float] | np.ndarray) -> LesionSummary:
    """Lesion count, sizes (voxels) and ABC/2 of the largest lesion of a label map (z, y, x)."""
    box = bounding_box(mask > 0)  # hemorrhage is a small part of a scan: label only its box
    if box is None:
        return LesionSummary(0, 0, 0, None)
    labels, n = label_lesions(mask[box])
    sizes = np.bincount(labels.ravel())[1:]
    largest = int(np.argmax(sizes)) + 1
    lesion = ndimage.find_objects(labels, max_label=largest)[largest - 1]
    result = abc2(labels[lesion] == largest, spacing_xyz, direction)
    axis = axial_axis(direction)
    start = box[axis].start + lesion[axis].start  # crop slice index -> image slice index
    return LesionSummary(n, int(sizes.sum()), int(sizes[largest - 1]),
                         ABC2(result.a_mm, result.b_mm, result.c_mm, result.slice_index + start))


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every True voxel (None when there is none)."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hit.size == 0:
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)
