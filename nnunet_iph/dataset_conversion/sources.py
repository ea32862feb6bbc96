"""Reading source volumes: single files (NIfTI, NRRD, MHA, ...) or DICOM series folders.

DICOM series go through the one DICOM reader, :mod:`nnunet_iph.dicom.reader` (shared with
``nnunet-iph predict``): series selection, gantry tilt and non-uniform slice spacing detection,
HU rescaling; :func:`resample_irregular` puts an irregular stack onto a regular orthogonal grid.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk

from nnunet_iph.dataset_conversion.checks import ConversionError
from nnunet_iph.dicom import DicomError
from nnunet_iph.dicom import reader as dicom_reader
from nnunet_iph.dicom.reader import SeriesGeometry, resample_irregular  # noqa: F401  (used by the converters)
from nnunet_iph.imageio import InputError, is_nifti, read_image


@dataclass
class Volume:
    image: sitk.Image
    path: Path
    kind: str  # "nifti", "file" or "dicom"
    series: SeriesGeometry | None = None
    notes: list[str] = field(default_factory=list)


def read_volume(path: str | os.PathLike, role: str) -> Volume:
    """Read a file or a DICOM series folder; errors name the path and the problem."""
    p = Path(path)
    if not p.exists():
        raise ConversionError(f"{role} {p}: file not found")
    if p.is_dir():
        return read_dicom_series(p, role)
    try:
        image = read_image(p, role)
    except InputError as err:
        raise ConversionError(str(err)) from None
    return Volume(image, p, "nifti" if is_nifti(p) else "file")


def read_dicom_series(folder: Path, role: str) -> Volume:
    """The series of ``folder`` (the selection rule of :mod:`nnunet_iph.dicom.series`; masks need not be CT)."""
    try:
        series = dicom_reader.read_dicom_series(folder, role, require_ct=role != "mask")
    except DicomError as err:
        raise ConversionError(str(err)) from None
    notes = [f"DICOM series {series.info.describe()} chosen ({series.rule}); also in the folder: "
             + "; ".join(o.describe() for o in series.others)] if series.others else []
    return Volume(series.image, folder, "dicom", series.geometry, notes)


def source_fingerprint(path: str | os.PathLike | None) -> list:
    """Cheap change detector for idempotent re-runs: resolved path, size and mtime (all files of a folder,
    nested ones included: the DICOM reader looks into sub-folders)."""
    if path is None:
        return []
    p = Path(path)
    try:
        if p.is_dir():
            h = hashlib.sha1()
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames.sort()
                for name in sorted(filenames):
                    full = os.path.join(dirpath, name)
                    st = os.stat(full)
                    h.update(f"{os.path.relpath(full, p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            return [str(p.resolve()), "dir", h.hexdigest()]
        st = p.stat()
        return [str(p.resolve()), st.st_size, st.st_mtime_ns]
    except OSError:
        return [str(p), "missing"]
