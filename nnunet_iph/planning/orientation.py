"""Which array axis is axial, coronal or sagittal: read from image headers, not assumed.

nnU-Net's 2D configurations slice along array axis 0 after ``transpose_forward``. With
SimpleITK-style readers the array is ``(k, j, i)`` (index axes reversed), and which *anatomical*
axis each array axis follows depends on the direction matrix. A per-plane model is only a
coronal (say) model if every image of the dataset maps its array axes to the same anatomical
axes, so this module also refuses datasets whose images are stored in mixed orientations.

Pure SimpleITK + numpy (no torch): usable in light tests and before nnU-Net is imported.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import SimpleITK as sitk

from nnunet_iph.planning import PLANES

#: physical (LPS/RAS, same axis order x, y, z) axis normal to each plane
PLANE_NORMAL = {"sagittal": 0, "coronal": 1, "axial": 2}
#: readers that reorient every image to one canonical orientation on load (array axis 0 = S-I, ...)
REORIENTING_READERS = {"SimpleITKIOWithReorient", "NibabelIOWithReorient"}
#: readers whose array axes are the voxel index axes reversed (k, j, i)
HEADER_READERS = {"SimpleITKIO", "NibabelIO"}
#: array axis -> physical axis for identity direction (and for reorienting readers)
CANONICAL_MAPPING = (2, 1, 0)


class MixedOrientationError(ValueError):
    """Images of one dataset map their array axes to different anatomical axes."""


def physical_axes_of_array(direction: Sequence[float] | np.ndarray) -> tuple[int, int, int]:
    """For numpy array axes 0, 1, 2 the physical axis (0=x L-R, 1=y A-P, 2=z S-I) each one follows.

    ``direction`` is SimpleITK's row-major 3x3 matrix (column j = direction of index axis j);
    numpy axis ``a`` is index axis ``2 - a``. Raises ``ValueError`` for 45-degree obliques where an
    array axis follows no physical axis clearly.
    """
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    mapping = []
    for a in range(3):
        col = np.abs(d[:, 2 - a])
        order = np.argsort(col)[::-1]
        if col[order[0]] - col[order[1]] < 0.05:
            raise ValueError(f"array axis {a} is oblique (direction column {d[:, 2 - a].round(3).tolist()}): "
                             "it follows no anatomical axis; reorient/resample the images first")
        mapping.append(int(order[0]))
    if sorted(mapping) != [0, 1, 2]:
        raise ValueError(f"direction matrix {d.round(3).tolist()} maps two array axes to one anatomical axis")
    return tuple(mapping)  # type: ignore[return-value]


def plane_transpose(plane: str, mapping: Sequence[int] = CANONICAL_MAPPING) -> tuple[list[int], list[int]]:
    """``transpose_forward`` / ``transpose_backward`` that put ``plane``'s slicing axis first.

    The remaining axes keep their array order, as nnU-Net's own planner does: with the canonical
    mapping axial -> [0, 1, 2], coronal -> [1, 0, 2], sagittal -> [2, 0, 1].
    """
    if plane not in PLANE_NORMAL:
        raise ValueError(f"unknown plane {plane!r}; choose from {list(PLANES)}")
    slicing_axis = list(mapping).index(PLANE_NORMAL[plane])
    forward = [slicing_axis] + [a for a in range(3) if a != slicing_axis]
    backward = [forward.index(a) for a in range(3)]
    return forward, backward


def read_direction(path: str | os.PathLike) -> np.ndarray:
    """The 3x3 direction matrix from the header only (no voxel data is read)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    if reader.GetDimension() != 3:
        raise ValueError(f"{path}: expected a 3D image, got {reader.GetDimension()}D")
    return np.asarray(reader.GetDirection(), dtype=float).reshape(3, 3)


@dataclass
class OrientationSurvey:
    """Array-axis -> anatomical-axis mapping of every image of a dataset."""

    mapping_by_file: dict[str, tuple[int, int, int]]
    direction_by_file: dict[str, np.ndarray] = field(repr=False)

    @property
    def groups(self) -> dict[tuple[int, int, int], list[str]]:
        out: dict[tuple[int, int, int], list[str]] = defaultdict(list)
        for f, m in self.mapping_by_file.items():
            out[m].append(f)
        return dict(out)

    @property
    def mixed(self) -> bool:
        return len(self.groups) > 1

    @property
    def mapping(self) -> tuple[int, int, int]:
        """The mapping shared by most images (the only one when not mixed)."""
        return max(self.groups.items(), key=lambda kv: len(kv[1]))[0]

    def describe(self, max_files: int = 3) -> str:
        names = {0: "L-R", 1: "A-P", 2: "S-I"}
        lines = []
        for m, files in sorted(self.groups.items(), key=lambda kv: -len(kv[1])):
            axes = ", ".join(f"array axis {a} = {names[p]}" for a, p in enumerate(m))
            shown = ", ".join(Path(f).name for f in files[:max_files]) + (" ..." if len(files) > max_files else "")
            lines.append(f"  {len(files)} image(s) with {axes}: {shown}")
        return "\n".join(lines)

    def flipped_files(self) -> list[str]:
        """Same axis mapping but opposite axis signs to the majority: in-plane mirror images."""
        ref_files = self.groups[self.mapping]
        ref = np.sign(np.round(self.direction_by_file[ref_files[0]], 3))
        return [f for f in ref_files if not np.array_equal(np.sign(np.round(self.direction_by_file[f], 3)), ref)]


def survey_orientations(files: Iterable[str | os.PathLike]) -> OrientationSurvey:
    mapping, directions = {}, {}
    for f in files:
        d = read_direction(f)
        try:
            mapping[str(f)] = physical_axes_of_array(d)
        except ValueError as err:
            raise ValueError(f"{f}: {err}") from None
        directions[str(f)] = d
    if not mapping:
        raise ValueError("no images to survey")
    return OrientationSurvey(mapping, directions)


def check_orientations(files: Iterable[str | os.PathLike], allow_mixed: bool = False) -> tuple[int, int, int]:
    """The dataset's array-axis -> anatomical-axis mapping; refuse mixed orientations.

    With ``allow_mixed=True`` a mixed dataset only warns (loudly, on stderr too) and the majority
    mapping is used: per-plane models then see some images along the wrong plane.
    """
    survey = survey_orientations(files)
    if survey.mixed:
        msg = ("images are stored in mixed orientations, so 'axial/coronal/sagittal' would mean different "
               "anatomical planes for different images:\n" + survey.describe() +
               "\nReorient the dataset consistently first (the converters can reorient), or use a reorienting "
               "reader (SimpleITKIOWithReorient).")
        if not allow_mixed:
            raise MixedOrientationError(msg)
        banner = "!" * 78
        print(f"{banner}\nWARNING (allow_mixed_orientations): {msg}\n{banner}", file=sys.stderr)
        warnings.warn(msg, stacklevel=2)
    flipped = survey.flipped_files()
    if flipped:
        warnings.warn(f"{len(flipped)} image(s) share the dataset's axis order but have flipped axes "
                      f"(e.g. {Path(flipped[0]).name}): 2D slices of those are mirror images of the others",
                      stacklevel=2)
    return survey.mapping
