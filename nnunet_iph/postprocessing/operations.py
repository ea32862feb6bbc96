"""Post-processing of predicted masks: small-component removal (mL), largest components, hole
filling, morphological opening / closing with ellipsoidal kernels in mm or voxels.

Everything runs inside the bounding box of the mask (plus the kernel's reach), so cleaning a
512 x 512 x 40 prediction costs what its lesions cost. Steps of a :class:`PostprocessingConfig` run
in a fixed order: restriction to the brain (intracranial mask), closing, hole filling, opening,
removal of small components, keeping the largest. Restriction comes first so that the component
filters judge what is left inside the skull (``keep_largest`` must not keep a scalp false positive
that the restriction then deletes, nor ``min_volume_ml`` keep a component only because its
extracranial part made it big); voxels that closing or hole filling add are taken only inside the mask.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Iterable, Sequence

import numpy as np
from scipy import ndimage

from nnunet_iph.analysis.metrics import nonzero_bbox

RADIUS_UNITS = ("mm", "voxel")
FILL_MODES = ("2d", "3d")


def _full_structure(ndim: int) -> np.ndarray:
    return np.ones((3,) * ndim, bool)  # 26-connectivity in 3D, 8 in 2D (as lesion detection)


def structuring_element(radius: float, spacing: Sequence[float], unit: str = "mm") -> np.ndarray:
    """Ellipsoid of ``radius`` (mm, or voxels) on the voxel grid of ``spacing``.

    In mm the half-axis along axis i is radius / spacing_i voxels: a 2 mm kernel on 0.45 x 0.45 x 5 mm
    CT is a disc of ~4 voxels in-plane and one slice thick (5 mm slices are farther than 2 mm).
    """
    if unit not in RADIUS_UNITS:
        raise ValueError(f"radius unit must be one of {RADIUS_UNITS}, not {unit!r}")
    if not (math.isfinite(radius) and radius >= 0):
        raise ValueError(f"radius must be a finite number >= 0, not {radius}")
    semi = [radius / s if unit == "mm" else float(radius) for s in spacing]
    half = [int(math.floor(a + 1e-9)) for a in semi]
    grids = np.meshgrid(*[np.arange(-h, h + 1) for h in half], indexing="ij")
    r2 = sum(((g / a) ** 2 if a > 0 else np.where(g == 0, 0.0, np.inf)) for g, a in zip(grids, semi))
    return r2 <= 1.0 + 1e-9


def _box(mask: np.ndarray, margin: Sequence[int]) -> tuple[slice, ...] | None:
    box = nonzero_bbox(mask)
    if box is None:
        return None
    return tuple(slice(max(0, b.start - m), min(n, b.stop + m)) for b, m, n in zip(box, margin, mask.shape))


def remove_small_components(mask: np.ndarray, spacing: Sequence[float], min_volume_ml: float) -> np.ndarray:
    """Drop connected components (26-connectivity) smaller than ``min_volume_ml``."""
    mask = np.asarray(mask, bool)
    box = _box(mask, [0] * mask.ndim)
    if box is None or min_volume_ml <= 0:
        return mask.copy()
    lab, n = ndimage.label(mask[box], _full_structure(mask.ndim))
    voxel_ml = float(np.prod(spacing)) / 1000.0
    sizes = np.bincount(lab.ravel(), minlength=n + 1) * voxel_ml
    keep = sizes >= min_volume_ml
    keep[0] = False
    out = np.zeros_like(mask)
    out[box] = keep[lab]
    return out


def keep_largest_components(mask: np.ndarray, k: int = 1) -> np.ndarray:
    """Keep the ``k`` largest connected components (26-connectivity); ties keep the lower label."""
    if k < 1:
        raise ValueError(f"k must be >= 1, not {k}")
    mask = np.asarray(mask, bool)
    box = _box(mask, [0] * mask.ndim)
    if box is None:
        return mask.copy()
    lab, n = ndimage.label(mask[box], _full_structure(mask.ndim))
    if n <= k:
        return mask.copy()
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    sizes[0] = -1
    order = np.argsort(-sizes[1:], kind="stable") + 1
    keep = np.zeros(n + 1, bool)
    keep[order[:k]] = True
    out = np.zeros_like(mask)
    out[box] = keep[lab]
    return out


def fill_holes(mask: np.ndarray, mode: str = "3d", axis: int = 0) -> np.ndarray:
    """Fill background enclosed by the mask: in 3D, or slice by slice along ``axis`` ('2d', the
    natural choice for thick-slice CT where a lesion can be open towards the next slice)."""
    if mode not in FILL_MODES:
        raise ValueError(f"fill mode must be one of {FILL_MODES}, not {mode!r}")
    mask = np.asarray(mask, bool)
    box = _box(mask, [0] * mask.ndim)
    if box is None:
        return mask.copy()
    sub = mask[box]
    if mode == "3d" or mask.ndim == 2:
        filled = ndimage.binary_fill_holes(sub)
    else:
        filled = np.stack([ndimage.binary_fill_holes(s) for s in np.moveaxis(sub, axis, 0)], axis=axis)
    out = mask.copy()
    out[box] = filled
    return out


def _morph(mask: np.ndarray, radius: float, spacing: Sequence[float], unit: str, closing: bool) -> np.ndarray:
    mask = np.asarray(mask, bool)
    element = structuring_element(radius, spacing, unit)
    half = [s // 2 for s in element.shape]
    box = _box(mask, half if closing else [0] * mask.ndim)
    if box is None or element.sum() <= 1:
        return mask.copy()
    # pad by the kernel so that the image border does not erode what a closing adds
    sub = np.pad(mask[box], [(h, h) for h in half])
    op = ndimage.binary_closing if closing else ndimage.binary_opening
    res = op(sub, structure=element)
    res = res[tuple(slice(h, h + n) for h, n in zip(half, mask[box].shape))]
    out = np.zeros_like(mask)
    out[box] = res
    return out


def opening(mask: np.ndarray, radius: float, spacing: Sequence[float], unit: str = "mm") -> np.ndarray:
    """Morphological opening (removes thin spurs and specks) with an ellipsoidal kernel."""
    return _morph(mask, radius, spacing, unit, closing=False)


def closing(mask: np.ndarray, radius: float, spacing: Sequence[float], unit: str = "mm") -> np.ndarray:
    """Morphological closing (bridges small gaps) with an ellipsoidal kernel; the image border is
    treated as background that does not erode."""
    return _morph(mask, radius, spacing, unit, closing=True)


# --------------------------------------------------------------------------------------------
# configuration on label maps

@dataclass(frozen=True)
class PostprocessingConfig:
    """What to do with each foreground label; None/False: skip that step."""
    closing_radius: float | None = None
    fill_holes: str | None = None          # '2d' (per slice along axis 0) or '3d'
    opening_radius: float | None = None
    min_volume_ml: float | None = None
    keep_largest: int | None = None
    radius_unit: str = "mm"
    labels: tuple[int, ...] | None = None  # None: every foreground label present
    restrict_to_brain: bool = False        # voxels outside the case's intracranial mask -> background

    def __post_init__(self):
        if self.radius_unit not in RADIUS_UNITS:
            raise ValueError(f"radius unit must be one of {RADIUS_UNITS}, not {self.radius_unit!r}")
        if self.fill_holes not in (None, *FILL_MODES):
            raise ValueError(f"fill_holes must be one of {FILL_MODES} or None, not {self.fill_holes!r}")
        if not isinstance(self.restrict_to_brain, bool):
            raise ValueError(f"restrict_to_brain must be true or false, not {self.restrict_to_brain!r}")
        if self.keep_largest is not None and int(self.keep_largest) < 1:
            raise ValueError(f"keep_largest must be >= 1, not {self.keep_largest}")
        for name in ("closing_radius", "opening_radius", "min_volume_ml"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, not {v}")

    @property
    def has_mask_steps(self) -> bool:
        """Whether a step works on each label's mask (everything but the restriction)."""
        return bool(self.closing_radius or self.fill_holes or self.opening_radius or self.min_volume_ml
                    or self.keep_largest)

    @property
    def is_identity(self) -> bool:
        return not (self.restrict_to_brain or self.has_mask_steps)

    def describe(self) -> str:
        parts = ["restrict to brain"] if self.restrict_to_brain else []
        u = "mm" if self.radius_unit == "mm" else " vox"
        if self.closing_radius:
            parts.append(f"closing r={self.closing_radius:g}{u}")
        if self.fill_holes:
            parts.append(f"fill holes {self.fill_holes}")
        if self.opening_radius:
            parts.append(f"opening r={self.opening_radius:g}{u}")
        if self.min_volume_ml:
            parts.append(f"remove < {self.min_volume_ml:g} mL")
        if self.keep_largest:
            parts.append(f"keep largest {self.keep_largest}")
        return ", ".join(parts) or "none"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = list(self.labels) if self.labels is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PostprocessingConfig":
        if not isinstance(d, dict):
            raise ValueError(f"a post-processing configuration is a JSON object, not {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown post-processing option(s): {', '.join(sorted(unknown))}")
        try:
            d = dict(d)
            if d.get("labels") is not None:
                d["labels"] = tuple(int(v) for v in d["labels"])
            return cls(**d)
        except TypeError as err:  # a string where a number belongs: isfinite("1") / int([1])
            raise ValueError(f"post-processing configuration {d}: wrong type of value ({err})") from None

    def merged(self, other: "PostprocessingConfig") -> "PostprocessingConfig | None":
        """Both sets of steps, or None when they set the same step or different radius units."""
        a, b = self.to_dict(), other.to_dict()
        steps = ("restrict_to_brain", "closing_radius", "fill_holes", "opening_radius", "min_volume_ml",
                 "keep_largest")
        if any(a[s] and b[s] for s in steps):
            return None
        uses_radius = lambda d: bool(d["closing_radius"] or d["opening_radius"])  # noqa: E731
        if uses_radius(a) and uses_radius(b) and a["radius_unit"] != b["radius_unit"]:
            return None
        out = {s: a[s] or b[s] for s in steps}
        out["radius_unit"] = a["radius_unit"] if uses_radius(a) else b["radius_unit"]
        out["labels"] = a["labels"] if a["labels"] is not None else b["labels"]
        return PostprocessingConfig.from_dict(out)


def process_mask(mask: np.ndarray, spacing: Sequence[float], config: PostprocessingConfig) -> np.ndarray:
    """All steps of ``config`` on one binary mask, in the fixed order."""
    m = np.asarray(mask, bool)
    if config.closing_radius:
        m = closing(m, config.closing_radius, spacing, config.radius_unit)
    if config.fill_holes:
        m = fill_holes(m, config.fill_holes)
    if config.opening_radius:
        m = opening(m, config.opening_radius, spacing, config.radius_unit)
    if config.min_volume_ml:
        m = remove_small_components(m, spacing, config.min_volume_ml)
    if config.keep_largest:
        m = keep_largest_components(m, int(config.keep_largest))
    return m


def restrict_to_brain(label_map: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """A copy of ``label_map`` with every voxel outside ``brain`` (non-zero: inside) set to background."""
    arr, brain = np.asarray(label_map), np.asarray(brain)
    if brain.shape != arr.shape:
        raise ValueError(f"brain mask of shape {brain.shape} for a label map of shape {arr.shape}")
    return np.where(brain != 0, arr, np.zeros((), arr.dtype))


def apply_postprocessing(label_map: np.ndarray, spacing: Sequence[float], config: PostprocessingConfig,
                         labels: Iterable[int] | None = None, brain: np.ndarray | None = None) -> np.ndarray:
    """A post-processed copy of a label map: each label on its own; voxels a step removes become
    background, voxels a step adds are taken only from background (never from another label) and,
    with ``restrict_to_brain``, only inside ``brain`` (the case's intracranial mask, same shape)."""
    if config.restrict_to_brain and brain is None:
        raise ValueError("the post-processing restricts to the brain but no brain mask was given")
    inside = np.asarray(brain) != 0 if config.restrict_to_brain else None
    arr = restrict_to_brain(label_map, inside) if inside is not None else np.asarray(label_map)
    out = arr.copy()
    if not config.has_mask_steps:
        return out
    box = nonzero_bbox(arr)
    if box is None:
        return out
    if labels is None:
        labels = config.labels
    if labels is None:
        labels = [int(v) for v in np.unique(arr[box]) if v != 0]
    for label in labels:
        m = arr == label
        new = process_mask(m, spacing, config)
        if inside is not None:
            new &= inside
        out[m & ~new] = 0
        out[new & ~m & (out == 0)] = label
    return out


__all__ = ["RADIUS_UNITS", "FILL_MODES", "structuring_element", "remove_small_components",
           "keep_largest_components", "fill_holes", "opening", "closing", "PostprocessingConfig",
           "process_mask", "restrict_to_brain", "apply_postprocessing"]
