"""Reading source volumes: single files (NIfTI, NRRD, MHA, ...) or DICOM series folders.

DICOM series are read with SimpleITK's ``ImageSeriesReader``. That reader assumes a regular,
orthogonal slice stack; head CT often breaks this with gantry tilt (slice positions sheared along
the table) or non-uniform slice spacing (missing slices, mixed reconstructions). Both are detected
from the per-slice ImagePositionPatient and can be refused, kept as read (reported), or resampled
onto a regular orthogonal grid (:func:`resample_irregular`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_iph.dataset_conversion.checks import ConversionError
from nnunet_iph.imageio import InputError, is_nifti, read_image, sitk_message

# slice-geometry tolerances: DICOM positions are decimal strings, typically to 1e-3 mm or better
SLICE_GAP_ABS_TOL = 0.01  # mm
SLICE_GAP_REL_TOL = 0.01  # fraction of the median gap
TILT_TOL_DEG = 0.1
IOP_TOL = 1e-4


@dataclass
class SeriesGeometry:
    """Slice geometry of a DICOM series, sorted along the slice normal."""

    files: list[str]
    positions: np.ndarray  # (n, 3) ImagePositionPatient, sorted
    row: np.ndarray  # direction of increasing column index (x)
    col: np.ndarray  # direction of increasing row index (y)
    normal: np.ndarray
    gaps: np.ndarray  # distances between consecutive slices along the normal
    tilt_deg: float
    nonuniform: bool

    @property
    def irregular(self) -> bool:
        return self.tilt_deg > TILT_TOL_DEG or self.nonuniform

    def describe(self) -> str:
        parts = []
        if self.tilt_deg > TILT_TOL_DEG:
            parts.append(f"gantry tilt {self.tilt_deg:.2f} deg")
        if self.nonuniform:
            parts.append(f"non-uniform slice spacing ({self.gaps.min():.3g}-{self.gaps.max():.3g} mm, "
                         f"median {np.median(self.gaps):.3g} mm)")
        return " and ".join(parts) if parts else "regular"


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


def _tag(reader: sitk.ImageFileReader, key: str) -> str | None:
    return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else None


def _floats(value: str | None, n: int, what: str, fname: str) -> np.ndarray:
    try:
        vals = np.array([float(v) for v in (value or "").replace(",", "\\").split("\\") if v.strip()])
    except ValueError:
        vals = np.array([])
    if vals.size != n:
        raise ConversionError(f"DICOM slice {fname}: missing or malformed {what} ({value!r})")
    return vals


def analyse_series(files: list[str], folder: Path, role: str) -> SeriesGeometry:
    """Per-slice positions and orientation -> sorted file order, gaps, tilt."""
    reader = sitk.ImageFileReader()
    pos, iops = [], []
    for f in files:
        reader.SetFileName(f)
        try:
            reader.ReadImageInformation()
        except RuntimeError as err:
            raise ConversionError(f"{role} {folder}: unreadable DICOM slice {f} ({sitk_message(err)})") from None
        pos.append(_floats(_tag(reader, "0020|0032"), 3, "ImagePositionPatient (0020,0032)", f))
        iops.append(_floats(_tag(reader, "0020|0037"), 6, "ImageOrientationPatient (0020,0037)", f))
    iops_a = np.array(iops)
    if np.abs(iops_a - iops_a[0]).max() > IOP_TOL:
        raise ConversionError(f"{role} {folder}: slices have different orientations "
                              f"(ImageOrientationPatient varies); cannot build one volume")
    row, col = iops_a[0, :3], iops_a[0, 3:]
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    normal = np.cross(row, col)
    positions = np.array(pos)
    s = positions @ normal
    order = np.argsort(s, kind="stable")
    positions, s = positions[order], s[order]
    files = [files[i] for i in order]
    gaps = np.diff(s)
    if gaps.size and gaps.min() <= SLICE_GAP_ABS_TOL:
        k = int(np.argmin(gaps))
        raise ConversionError(f"{role} {folder}: two slices at the same position ({files[k]} and "
                              f"{files[k + 1]}); duplicate or mixed series")
    nonuniform = False
    tilt = 0.0
    if gaps.size:
        med = float(np.median(gaps))
        nonuniform = bool(np.abs(gaps - med).max() > SLICE_GAP_ABS_TOL + SLICE_GAP_REL_TOL * med)
        d = positions[-1] - positions[0]
        cosang = min(1.0, abs(float(d @ normal)) / float(np.linalg.norm(d)))
        tilt = float(np.degrees(np.arccos(cosang)))
    return SeriesGeometry(files, positions, row, col, normal, gaps, tilt, nonuniform)


def read_dicom_series(folder: Path, role: str) -> Volume:
    try:
        ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError as err:
        raise ConversionError(f"{role} {folder}: cannot scan for DICOM ({sitk_message(err)})") from None
    if not ids:
        raise ConversionError(f"{role} {folder}: folder contains no DICOM series")
    if len(ids) > 1:
        raise ConversionError(f"{role} {folder}: folder contains {len(ids)} DICOM series "
                              f"({', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''}); "
                              f"give a folder holding exactly one series")
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), ids[0]))
    if len(files) < 2:
        raise ConversionError(f"{role} {folder}: DICOM series has {len(files)} slice(s), i.e. a 2D "
                              f"image; expected a 3D volume")
    geom = analyse_series(files, folder, role)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(geom.files)
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise ConversionError(f"{role} {folder}: unreadable DICOM series ({sitk_message(err)})") from None
    return Volume(image, folder, "dicom", geom)


def source_fingerprint(path: str | os.PathLike | None) -> list:
    """Cheap change detector for idempotent re-runs: resolved path, size and mtime (all files of a folder)."""
    if path is None:
        return []
    p = Path(path)
    try:
        if p.is_dir():
            h = hashlib.sha1()
            for entry in sorted(os.scandir(p), key=lambda e: e.name):
                if entry.is_file():
                    st = entry.stat()
                    h.update(f"{entry.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            return [str(p.resolve()), "dir", h.hexdigest()]
        st = p.stat()
        return [str(p.resolve()), st.st_size, st.st_mtime_ns]
    except OSError:
        return [str(p), "missing"]


def resample_irregular(arr: np.ndarray, geom: SeriesGeometry, spacing_xy: tuple[float, float],
                       nearest: bool, fill: float) -> sitk.Image:
    """Resample a tilted / non-uniformly spaced slice stack onto a regular orthogonal grid.

    ``arr`` is (z, y, x) in the sorted slice order of ``geom``. Each target slice lies at a regular
    step along the slice normal; it is interpolated between the two nearest source slices (linear,
    or nearest for masks), each shifted in-plane by its own offset (the tilt shear). The in-plane grid
    grows to the union of all slice footprints, so no voxel is cut off. The pixel type is kept
    (integer images are rounded).
    """
    from scipy import ndimage

    sx, sy = spacing_xy
    p0 = geom.positions[0]
    rel = geom.positions - p0
    s = rel @ geom.normal
    u = rel @ geom.row
    v = rel @ geom.col
    dz = float(np.median(np.diff(s)))
    nz = int(round((s[-1] - s[0]) / dz)) + 1
    umin, vmin = float(u.min()), float(v.min())
    nx = arr.shape[2] + int(np.ceil((u.max() - umin) / sx - 1e-6))
    ny = arr.shape[1] + int(np.ceil((v.max() - vmin) / sy - 1e-6))
    out_dtype = arr.dtype
    out = np.empty((nz, ny, nx), dtype=out_dtype)
    work = arr.astype(np.float32, copy=False)

    def shifted(k: int) -> np.ndarray:
        # target pixel (j, i) sits at in-plane offset (vmin + j*sy, umin + i*sx) from p0;
        # in slice k that is index (j + (vmin - v_k)/sy, i + (umin - u_k)/sx)
        off = ((vmin - v[k]) / sy, (umin - u[k]) / sx)
        return ndimage.affine_transform(work[k], np.eye(2), offset=off, output_shape=(ny, nx),
                                        order=0 if nearest else 1, cval=fill, mode="constant")

    for t in range(nz):
        st = t * dz
        k = int(np.clip(np.searchsorted(s, st, side="right") - 1, 0, len(s) - 2))
        w = float(np.clip((st - s[k]) / (s[k + 1] - s[k]), 0.0, 1.0))
        if nearest:
            sl = shifted(k if w < 0.5 else k + 1)
        else:
            sl = shifted(k) if w == 0 else (shifted(k + 1) if w == 1 else
                                            (1 - w) * shifted(k) + w * shifted(k + 1))
        if out_dtype.kind in "iub":
            info = np.iinfo(out_dtype)
            sl = np.clip(np.rint(sl), info.min, info.max)
        out[t] = sl.astype(out_dtype)
    image = sitk.GetImageFromArray(out)
    image.SetSpacing((sx, sy, dz))
    image.SetOrigin(tuple(float(c) for c in p0 + umin * geom.row + vmin * geom.col))
    image.SetDirection(tuple(float(c) for c in np.column_stack([geom.row, geom.col, geom.normal]).ravel()))
    return image
