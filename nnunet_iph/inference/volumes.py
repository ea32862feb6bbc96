"""Hemorrhage volume per case from predicted label maps (mL = voxel count x voxel volume).

Pure SimpleITK + pandas: no torch, usable on any folder of masks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import SimpleITK as sitk

from nnunet_iph.imageio import write_csv


def mask_volumes(mask_path: str | os.PathLike, labels: Mapping[str, int] | None = None) -> dict[str, float]:
    """``{'n_voxels', 'voxel_ml', 'hemorrhage_ml', '<label>_ml' ...}``; hemorrhage = every label > 0."""
    img = sitk.ReadImage(str(mask_path))
    arr = sitk.GetArrayViewFromImage(img)
    voxel_ml = float(np.prod(img.GetSpacing())) / 1000.0
    n = int(np.count_nonzero(arr))
    out: dict[str, float] = {"voxel_ml": voxel_ml, "n_voxels": n, "hemorrhage_ml": round(n * voxel_ml, 6)}
    fg = {k: v for k, v in (labels or {}).items() if isinstance(v, int) and v > 0}
    if len(fg) > 1:
        for name, value in fg.items():
            out[f"{name}_ml"] = round(int(np.count_nonzero(arr == value)) * voxel_ml, 6)
    return out


def volume_table(mask_folder: str | os.PathLike, cases: Sequence[str], file_ending: str = ".nii.gz",
                 labels: Mapping[str, int] | None = None) -> pd.DataFrame:
    folder = Path(mask_folder)
    rows = []
    for case in cases:
        path = folder / f"{case}{file_ending}"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: predicted mask missing")
        rows.append({"case": case, "mask": path.name, **mask_volumes(path, labels)})
    cols = ["case", "mask", "hemorrhage_ml", "n_voxels", "voxel_ml"]
    df = pd.DataFrame(rows)
    return df[cols + [c for c in df.columns if c not in cols]] if rows else pd.DataFrame(columns=cols)


def write_volume_table(mask_folder: str | os.PathLike, cases: Sequence[str], csv_path: str | os.PathLike,
                       file_ending: str = ".nii.gz", labels: Mapping[str, int] | None = None) -> Path:
    return write_csv(volume_table(mask_folder, cases, file_ending, labels), csv_path)
