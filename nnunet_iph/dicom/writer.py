"""Writing a CT volume as a DICOM series (SimpleITK/GDCM), for tests, benchmarks and demos.

Real scanners store offset pixel values with RescaleSlope/Intercept; so does this writer
(``stored = (HU - intercept) / slope``), so that reading it back exercises the rescale.
Per-slice positions may be given explicitly: a gantry-tilted or gapped stack is then written
exactly as a scanner would (ImagePositionPatient per slice, one ImageOrientationPatient).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pydicom
import SimpleITK as sitk

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


@dataclass
class SeriesTags:
    series_uid: str
    study_uid: str
    description: str = "AXIAL HEAD"
    series_number: int = 2
    modality: str = "CT"
    image_type: str = "ORIGINAL\\PRIMARY\\AXIAL"
    patient_id: str = "ANON"
    slope: float = 1.0
    intercept: float = -1024.0


def grid_of(image: sitk.Image) -> tuple[tuple[float, ...], list[np.ndarray]]:
    """ImageOrientationPatient and per-slice ImagePositionPatient of a (regular) SimpleITK volume."""
    d = np.array(image.GetDirection()).reshape(3, 3)
    iop = tuple(float(v) for v in (*d[:, 0], *d[:, 1]))
    positions = [np.array(image.TransformIndexToPhysicalPoint((0, 0, k))) for k in range(image.GetSize()[2])]
    return iop, positions


def write_ct_series(hu: np.ndarray, folder: str | os.PathLike, tags: SeriesTags, spacing_xy: Sequence[float],
                    iop: Sequence[float], positions: Sequence[Sequence[float]],
                    slice_thickness: float | None = None) -> list[Path]:
    """One file per slice of ``hu`` (z, y, x), ``positions[k]`` the ImagePositionPatient of slice k."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stored = np.rint((np.asarray(hu, np.float64) - tags.intercept) / tags.slope)
    dtype = np.uint16 if stored.min() >= 0 else np.int16
    if stored.min() < np.iinfo(dtype).min or stored.max() > np.iinfo(dtype).max:
        raise ValueError(f"HU range {np.min(hu)}..{np.max(hu)} does not fit {dtype.__name__} with slope "
                         f"{tags.slope} / intercept {tags.intercept}")
    stored = stored.astype(dtype)
    thickness = slice_thickness if slice_thickness is not None else (
        float(np.linalg.norm(np.subtract(positions[1], positions[0]))) if len(positions) > 1 else 1.0)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    paths = []
    for k in range(stored.shape[0]):
        sl = sitk.GetImageFromArray(stored[k])
        sl.SetSpacing(tuple(float(v) for v in spacing_xy))
        meta = {
            "0008|0008": tags.image_type, "0008|0016": CT_IMAGE_STORAGE, "0008|0018": f"{tags.series_uid}.{k + 1}",
            "0008|0060": tags.modality, "0008|103e": tags.description, "0010|0010": f"{tags.patient_id}^",
            "0010|0020": tags.patient_id, "0020|000d": tags.study_uid, "0020|0052": f"{tags.study_uid}.1", "0020|000e": tags.series_uid,
            "0020|0011": str(tags.series_number), "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in positions[k]),
            "0020|0037": "\\".join(f"{v:.8f}" for v in iop),
            "0028|0030": f"{spacing_xy[1]:.8f}\\{spacing_xy[0]:.8f}", "0018|0050": f"{thickness:.6g}",
            "0028|1052": "0", "0028|1053": "1", "0028|1054": "HU",  # GDCM would rescale: set below
        }
        for key, value in meta.items():
            sl.SetMetaData(key, value)
        path = folder / f"IM{tags.series_number:03d}_{k:04d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(sl)
        ds = pydicom.dcmread(path)
        ds.RescaleIntercept, ds.RescaleSlope = f"{tags.intercept:g}", f"{tags.slope:g}"
        ds.save_as(path)
        paths.append(path)
    return paths
