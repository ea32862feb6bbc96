"""Which voxel values a label image may hold, read from ``dataset.json``, and the value mappings a
user asks for (``--threshold``, ``--map-label``).

A probability map or a 0/255 mask read as a label map gives plausible numbers that mean nothing:
``int(0.37)`` makes background a scored "label 0" with Dice 1, and a 0/255 mask against
``dataset.json``'s label 1 makes every case "empty". So such images are refused, naming the file
and the values found, and mapped only when the user says how.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping

import numpy as np

from nnunet_iph.analysis.metrics import Label, nonzero_bbox
from nnunet_iph.imageio import InputError

if TYPE_CHECKING:  # pragma: no cover
    import SimpleITK as sitk


def _dataset_labels(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"dataset.json {path}: not readable JSON ({err})") from None
    labels = data.get("labels", {}) if isinstance(data, dict) else None
    if not isinstance(labels, dict):
        raise ValueError(f"dataset.json {path}: 'labels' must be an object like {{\"background\": 0, \"blood\": 1}}")
    if labels and all(str(k).strip().isdigit() for k in labels) and not any(
            isinstance(v, (int, list)) for v in labels.values()):
        return {str(v): int(k) for k, v in labels.items()}  # nnU-Net v1 style: {"0": "background", ...}
    return labels


def labels_from_dataset_json(path: str | os.PathLike) -> list[Label]:
    """Foreground labels (ints, or tuples for nnU-Net regions) of an nnU-Net ``dataset.json``."""
    path = Path(path)
    out: list[Label] = []
    for name, value in _dataset_labels(path).items():
        if name == "ignore":
            continue
        try:
            if isinstance(value, (list, tuple)):
                region = tuple(int(v) for v in value)
                if region != (0,):
                    out.append(region if len(region) > 1 else region[0])
            elif int(value) != 0:
                out.append(int(value))
        except (TypeError, ValueError):
            raise ValueError(f"dataset.json {path}: label {name!r} has the value {value!r}, not an integer "
                             "or a list of integers") from None
    return out


def dataset_values(path: str | os.PathLike) -> tuple[int, ...]:
    """Every voxel value a label image of the dataset may hold (background, labels, ignore)."""
    values = {0}
    ignore = _dataset_labels(Path(path)).get("ignore")
    if isinstance(ignore, int):
        values.add(ignore)
    for label in labels_from_dataset_json(path):
        values.update(label if isinstance(label, tuple) else (label,))
    return tuple(sorted(values))


def parse_value_map(items: Mapping[int, int] | Iterable[str] | None) -> tuple[tuple[int, int], ...]:
    """``['255=1', '128=0']`` (or a mapping) -> ((255, 1), (128, 0))."""
    if not items:
        return ()
    if isinstance(items, Mapping):
        pairs = [(int(k), int(v)) for k, v in items.items()]
    else:
        pairs = []
        for item in items:
            src, _, dst = str(item).partition("=")
            try:
                pairs.append((int(src), int(dst)))
            except ValueError:
                raise ValueError(f"--map-label {item!r}: expected VALUE=LABEL with integers, e.g. 255=1") from None
    sources = [s for s, _ in pairs]
    if len(set(sources)) != len(sources):
        raise ValueError(f"--map-label maps a value twice: {sorted(s for s in sources if sources.count(s) > 1)}")
    return tuple(pairs)


def check_label_image(image: "sitk.Image", path: str | os.PathLike, role: str) -> None:
    """A label image is 2D or 3D with one value per voxel (not a colour or vector image, not 4D)."""
    dim, comps = image.GetDimension(), image.GetNumberOfComponentsPerPixel()
    if dim not in (2, 3) or comps != 1:
        raise InputError(f"{role} {path}: not a label map ({dim}D, {comps} value(s) per voxel; expected a 2D or "
                         "3D image with one value per voxel)")


def _examples(values: np.ndarray, n: int = 5) -> str:
    """A few distinct values (from the first million, so a whole probability map costs little)."""
    distinct = np.unique(values[: 1 << 20])
    more = distinct.size > n or values.size > 1 << 20
    return ", ".join(f"{v:g}" for v in distinct[:n]) + (" ..." if more else "")


@dataclass(frozen=True)
class LabelValues:
    """How images are turned into label maps: the values allowed (None: any integer), where they
    come from, a value mapping for every image and a threshold for predicted probability maps."""

    allowed: tuple[int, ...] | None = None
    source: str | None = None
    value_map: tuple[tuple[int, int], ...] = ()
    threshold: float | None = None
    threshold_label: int = 1

    def __post_init__(self) -> None:
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise ValueError(f"--threshold must be a finite number, not {self.threshold}")

    def to_labels(self, arr: np.ndarray, path: str | os.PathLike, role: str) -> np.ndarray:
        """``arr`` as a label map, or an :class:`InputError` naming ``path`` and the values found."""
        if role == "prediction" and self.threshold is not None:
            label = self.threshold_label
            return np.where(arr >= self.threshold, label, 0).astype(np.uint8 if 0 <= label < 256 else np.int32)
        if arr.dtype.kind == "f":
            box = nonzero_bbox(arr)
            sub = arr[box] if box is not None else arr.ravel()[:0]
            frac = sub[sub != np.floor(sub)]
            if frac.size:
                hint = ("; a probability map? --threshold T makes voxels >= T foreground" if role == "prediction"
                        else "")
                raise InputError(f"{role} {path}: not a label map: {frac.size} voxels hold non-integer values "
                                 f"({_examples(frac)}){hint}")
            arr = arr.astype(np.int32)
        elif arr.dtype.kind not in "biu":
            raise InputError(f"{role} {path}: not a label map (voxel type {arr.dtype})")
        if self.value_map:
            out = arr.astype(np.int32) if arr.dtype.kind == "b" or arr.dtype.itemsize < 4 else arr.copy()
            for src, dst in self.value_map:
                out[arr == src] = dst
            arr = out
        if self.allowed is not None:
            box = nonzero_bbox(arr)
            found = np.unique(arr[box]) if box is not None else np.empty(0, arr.dtype)
            bad = [int(v) for v in found if int(v) not in self.allowed]
            if bad:
                shown = ", ".join(str(v) for v in bad[:10]) + (" ..." if len(bad) > 10 else "")
                raise InputError(f"{role} {path}: label values {shown} are not labels of {self.source} "
                                 f"({', '.join(map(str, self.allowed))}); map them with --map-label "
                                 f"{bad[0]}=LABEL (0 for background)")
        return arr


__all__ = ["LabelValues", "check_label_image", "labels_from_dataset_json", "dataset_values", "parse_value_map"]
