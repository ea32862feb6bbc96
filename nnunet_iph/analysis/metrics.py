"""Per-case segmentation metrics for head-CT hemorrhage masks (pure numpy/scipy, no torch).

Everything is spacing-aware (mm, mL) and defined for binary and multi-label masks:

* overlap: Dice (= F-measure), IoU, precision, recall (sensitivity), specificity;
* surface: HD95, Hausdorff (max), average symmetric surface distance (ASSD) and normalised surface
  Dice (NSD) at a tolerance in mm;
* volume: reference / predicted volume in mL and the relative volume difference;
* lesion-wise detection: connected components (26-connectivity in 3D, 8 in 2D) of the reference
  that the prediction touches (detected) or not (missed), and predicted components that touch no
  reference voxel (false positives).

Surface conventions (``surface='surfel'``, DeepMind / Metrics Reloaded, or ``'voxel'``, MONAI /
medpy), the HD95 variants and the distance engine are described in
:mod:`nnunet_iph.analysis.surface_distance`; names, directions, decimals and the empty-mask values
of every column in :mod:`nnunet_iph.analysis.metric_table`.

Empty masks (see :data:`EMPTY_POLICY`): both empty -> perfect scores; exactly one empty -> overlap
scores 0 and the distances a worst-case penalty (the image diagonal in mm, or NaN with
``empty_penalty='nan'``); every row carries ``empty_ref``/``empty_pred`` flags so summaries count
each kind instead of averaging them away.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
from scipy import ndimage

from nnunet_iph.analysis.metric_defaults import (DEFAULT_EMPTY_PENALTY, DEFAULT_HD95_VARIANT,  # noqa: F401
                                                 DEFAULT_NSD_TOLERANCE_MM, DEFAULT_PERCENTILE, DEFAULT_SURFACE,
                                                 EMPTY_PENALTIES, HD95_VARIANTS, SURFACES)
from nnunet_iph.analysis.metric_table import (empty_kind, empty_policy_text, empty_values, metric_columns,
                                              nsd_column, summary_metrics)
from nnunet_iph.analysis.surface_distance import (SurfaceDistances, check_spacing, cropped_surface_distances,
                                                  nonzero_bbox, surface_distances, union_bbox)

if TYPE_CHECKING:  # pragma: no cover
    import SimpleITK

#: what every metric is when a mask is empty (written from the metric table)
EMPTY_POLICY = empty_policy_text()


# --------------------------------------------------------------------------------------------
# metrics of one binary mask pair

def image_diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Physical diagonal of the image extent (shape x spacing): no distance in the image is longer.

    The worst-case penalty for a distance that does not exist because one mask is empty.
    """
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing))))


def check_options(surface: str, hd95_variant: str, empty_penalty: str, percentile: float,
                  nsd_tolerance_mm: float) -> None:
    """Refuse unknown conventions and out-of-range numbers before any image is read."""
    if surface not in SURFACES:
        raise ValueError(f"surface must be one of {SURFACES}, not {surface!r}")
    if hd95_variant not in HD95_VARIANTS:
        raise ValueError(f"hd95 variant must be one of {HD95_VARIANTS}, not {hd95_variant!r}")
    if empty_penalty not in EMPTY_PENALTIES:
        raise ValueError(f"empty penalty must be one of {EMPTY_PENALTIES}, not {empty_penalty!r}")
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must lie in [0, 100], not {percentile}")
    if not (math.isfinite(nsd_tolerance_mm) and nsd_tolerance_mm >= 0):
        raise ValueError(f"NSD tolerance must be a finite number of mm >= 0, not {nsd_tolerance_mm}")


def _surface_values(sd: SurfaceDistances, nsd_tolerance_mm: float, percentile: float, hd95_variant: str,
                    penalty: float) -> dict[str, float]:
    nsd = nsd_column(nsd_tolerance_mm)
    kind = empty_kind(sd.empty_ref, sd.empty_pred)
    if kind is not None:
        fixed = empty_values(kind, nsd_tolerance_mm, penalty)
        return {c: fixed[c] for c in ("hd95_mm", "hd_mm", "assd_mm", nsd)}
    return {"hd95_mm": sd.robust_hausdorff(percentile, hd95_variant), "hd_mm": sd.hausdorff(),
            "assd_mm": sd.average_symmetric(), nsd: sd.surface_dice(nsd_tolerance_mm)}


def surface_metrics(ref: np.ndarray, pred: np.ndarray, spacing: Sequence[float], *,
                    surface: str = DEFAULT_SURFACE, nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
                    percentile: float = DEFAULT_PERCENTILE, hd95_variant: str = DEFAULT_HD95_VARIANT,
                    empty_penalty: str = DEFAULT_EMPTY_PENALTY) -> dict[str, float]:
    """HD95 (``hd95_mm``, the ``percentile``-th), Hausdorff (``hd_mm``), ASSD (``assd_mm``) and NSD
    (``nsd_<T>mm``) of two binary masks (non-zero = foreground), with the empty-mask policy."""
    check_options(surface, hd95_variant, empty_penalty, percentile, nsd_tolerance_mm)
    ref = np.asarray(ref)
    sp = check_spacing(spacing, ref.ndim)
    sd = surface_distances(ref, pred, sp, surface)
    penalty = image_diagonal_mm(ref.shape, sp) if empty_penalty == "diagonal" else math.nan
    return _surface_values(sd, nsd_tolerance_mm, percentile, hd95_variant, penalty)


def _overlap_values(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """Overlap metrics from the confusion counts; an empty mask takes the table's values."""
    n_ref, n_pred = tp + fn, tp + fp
    out = {"specificity": tn / (tn + fp) if tn + fp else math.nan}
    kind = empty_kind(n_ref == 0, n_pred == 0)
    if kind is None:
        out.update({"dice": 2 * tp / (2 * tp + fp + fn), "iou": tp / (tp + fp + fn), "precision": tp / n_pred,
                    "recall": tp / n_ref, "rvd": (n_pred - n_ref) / n_ref})
    else:
        fixed = empty_values(kind, DEFAULT_NSD_TOLERANCE_MM, math.nan)
        out.update({c: fixed[c] for c in ("dice", "iou", "precision", "recall", "specificity", "rvd") if c in fixed})
    return out


def _connectivity_structure(ndim: int) -> np.ndarray:
    return np.ones((3,) * ndim, bool)  # 26-connectivity in 3D, 8 in 2D


def lesion_detection(ref: np.ndarray, pred: np.ndarray, min_overlap_voxels: int = 1) -> dict[str, int]:
    """Lesion-wise detection with connected components (26-connectivity in 3D, 8 in 2D).

    A reference component is detected when at least ``min_overlap_voxels`` of its voxels are
    predicted; a predicted component touching no reference voxel is a false positive.
    """
    ref = np.asarray(ref) != 0
    pred = np.asarray(pred) != 0
    box = union_bbox(nonzero_bbox(ref), nonzero_bbox(pred))
    if box is None:
        return {"n_lesions_ref": 0, "lesions_detected": 0, "lesions_missed": 0, "lesions_false_positive": 0}
    return _lesions(ref[box], pred[box], min_overlap_voxels)


def _lesions(ref: np.ndarray, pred: np.ndarray, min_overlap_voxels: int = 1) -> dict[str, int]:
    structure = _connectivity_structure(ref.ndim)
    n_ref = n_det = n_fp = 0
    if ref.any():
        lab, n_ref = ndimage.label(ref, structure)
        hits = np.bincount(lab[pred & ref], minlength=n_ref + 1)[1:]
        n_det = int(np.count_nonzero(hits >= max(1, min_overlap_voxels)))
    if pred.any():
        lab_p, n_pred = ndimage.label(pred, structure)
        touching = np.unique(lab_p[pred & ref])
        n_fp = int(n_pred - np.count_nonzero(touching))
    return {"n_lesions_ref": int(n_ref), "lesions_detected": n_det, "lesions_missed": int(n_ref - n_det),
            "lesions_false_positive": n_fp}


# --------------------------------------------------------------------------------------------
# per case, per label

Label = int | tuple[int, ...]


def label_name(label: Label) -> int | str:
    """How a label appears in tables: the integer, or ``1+2`` for a region (union of labels)."""
    if isinstance(label, (tuple, list)):
        return "+".join(str(int(v)) for v in label) if len(label) != 1 else int(label[0])
    return int(label)


def parse_label(text: str | int | Sequence[int]) -> Label:
    """``'1'`` -> 1, ``'1+2'`` or ``'1,2'`` -> (1, 2) (a region)."""
    if isinstance(text, (int, np.integer)):
        return int(text)
    if isinstance(text, (tuple, list)):
        return tuple(int(v) for v in text) if len(text) > 1 else int(text[0])
    parts = [p for p in str(text).replace(",", "+").split("+") if p.strip()]
    if not parts:
        raise ValueError(f"empty label {text!r}")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"label {text!r} is not an integer or a region like 1+2") from None
    return values[0] if len(values) == 1 else values


def _label_mask(arr: np.ndarray, label: Label) -> np.ndarray:
    if isinstance(label, tuple):
        return np.isin(arr, label)
    return arr == label


def present_labels(*arrays: np.ndarray) -> list[int]:
    """Sorted non-zero values present in any of the arrays (computed inside their bounding box)."""
    values: set[int] = set()
    for arr in arrays:
        box = nonzero_bbox(arr)
        if box is not None:
            values.update(int(v) for v in np.unique(np.asarray(arr)[box]) if v != 0)
    return sorted(values)


def both_empty_row(label: Label, nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM) -> dict[str, Any]:
    """The row of a label absent from both masks (a correct negative): the table's values."""
    return {"label": label_name(label), **empty_values("both_empty", nsd_tolerance_mm, math.nan),
            "empty_ref": True, "empty_pred": True}


def case_metrics(ref: np.ndarray, pred: np.ndarray, spacing: Sequence[float],
                 labels: Iterable[Label] | None = (1,), *, surface: str = DEFAULT_SURFACE,
                 nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM, percentile: float = DEFAULT_PERCENTILE,
                 hd95_variant: str = DEFAULT_HD95_VARIANT, empty_penalty: str = DEFAULT_EMPTY_PENALTY,
                 lesions: bool = True, min_overlap_voxels: int = 1) -> list[dict[str, Any]]:
    """All metrics of one case, one dict per label (keys: :func:`metric_columns` without ``case``).

    ``ref``/``pred`` are label maps of equal shape; ``labels`` are integers or tuples (regions,
    the union of their labels); None takes the labels present in either mask. ``spacing`` is in the
    array's axis order. The bounding box of all foreground is found once and every label is
    measured inside it (true negatives are counted over the whole image).
    """
    ref = np.asarray(ref)
    pred = np.asarray(pred)
    if ref.shape != pred.shape:
        raise ValueError(f"reference shape {ref.shape} != prediction shape {pred.shape}")
    box = union_bbox(nonzero_bbox(ref), nonzero_bbox(pred))
    empty_box = (slice(0, 0),) * ref.ndim
    return box_metrics(ref[box or empty_box], pred[box or empty_box], spacing, ref.shape, labels,
                       surface=surface, nsd_tolerance_mm=nsd_tolerance_mm, percentile=percentile,
                       hd95_variant=hd95_variant, empty_penalty=empty_penalty, lesions=lesions,
                       min_overlap_voxels=min_overlap_voxels)


def box_metrics(ref_box: np.ndarray, pred_box: np.ndarray, spacing: Sequence[float],
                image_shape: Sequence[int], labels: Iterable[Label] | None = (1,), *,
                surface: str = DEFAULT_SURFACE, nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
                percentile: float = DEFAULT_PERCENTILE, hd95_variant: str = DEFAULT_HD95_VARIANT,
                empty_penalty: str = DEFAULT_EMPTY_PENALTY, lesions: bool = True,
                min_overlap_voxels: int = 1) -> list[dict[str, Any]]:
    """:func:`case_metrics` of label maps cut out of an image of ``image_shape``.

    The box must contain all foreground of both; callers that evaluate many variants of one case
    (post-processing choice) keep only boxes in memory.
    """
    check_options(surface, hd95_variant, empty_penalty, percentile, nsd_tolerance_mm)
    ref_c = np.asarray(ref_box)
    pred_c = np.asarray(pred_box)
    if ref_c.shape != pred_c.shape:
        raise ValueError(f"reference shape {ref_c.shape} != prediction shape {pred_c.shape}")
    sp = check_spacing(spacing, len(image_shape))
    if labels is None:
        labels = [int(v) for v in np.union1d(np.unique(ref_c), np.unique(pred_c)) if v != 0] or [1]
    voxel_ml = float(np.prod(sp)) / 1000.0
    total = int(np.prod(image_shape))
    penalty = image_diagonal_mm(image_shape, sp) if empty_penalty == "diagonal" else math.nan
    rows = []
    for label in labels:
        label = parse_label(label)
        r = _label_mask(ref_c, label)
        p = _label_mask(pred_c, label)
        n_ref, n_pred = int(np.count_nonzero(r)), int(np.count_nonzero(p))
        if n_ref == 0 and n_pred == 0:
            rows.append(both_empty_row(label, nsd_tolerance_mm))
            continue
        tp = int(np.count_nonzero(r & p))
        fp, fn = n_pred - tp, n_ref - tp
        row: dict[str, Any] = {"label": label_name(label)}
        row.update(_overlap_values(tp, fp, fn, total - tp - fp - fn))
        sd = cropped_surface_distances(r, p, sp, surface)
        row.update(_surface_values(sd, nsd_tolerance_mm, percentile, hd95_variant, penalty))
        row["volume_ref_ml"] = n_ref * voxel_ml
        row["volume_pred_ml"] = n_pred * voxel_ml
        if lesions:
            row.update(_lesions(r, p, min_overlap_voxels))
        else:
            row.update({k: math.nan for k in summary_metrics("sum")})
        row["empty_ref"] = n_ref == 0
        row["empty_pred"] = n_pred == 0
        rows.append(row)
    order = metric_columns(nsd_tolerance_mm)[1:]
    return [{k: row[k] for k in order} for row in rows]


# --------------------------------------------------------------------------------------------
# images

def spacing_from_sitk(image: "SimpleITK.Image") -> tuple[float, ...]:
    """Spacing in the order of ``SimpleITK.GetArrayFromImage`` axes: (z, y, x), reversed from ITK."""
    return tuple(float(s) for s in reversed(image.GetSpacing()))


def read_mask(path: "str | os.PathLike[str]") -> tuple[np.ndarray, tuple[float, ...]]:
    """A label image as (array in z, y, x order, spacing in the same order), read by
    :func:`nnunet_iph.imageio.read_image` (truncated or empty files are refused)."""
    import SimpleITK as sitk

    from nnunet_iph.imageio import read_image

    image = read_image(path, "mask")
    return sitk.GetArrayFromImage(image), spacing_from_sitk(image)


__all__ = ["SURFACES", "HD95_VARIANTS", "EMPTY_PENALTIES", "EMPTY_POLICY", "DEFAULT_SURFACE",
           "DEFAULT_HD95_VARIANT", "DEFAULT_NSD_TOLERANCE_MM", "DEFAULT_PERCENTILE", "DEFAULT_EMPTY_PENALTY",
           "SurfaceDistances", "surface_distances", "surface_metrics", "lesion_detection", "case_metrics",
           "box_metrics", "check_options", "union_bbox", "both_empty_row", "metric_columns", "nsd_column",
           "nonzero_bbox", "image_diagonal_mm",
           "label_name", "parse_label", "present_labels", "spacing_from_sitk", "read_mask"]
