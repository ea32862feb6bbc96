"""One DICOM series reader for the converters and ``predict``.

Headers come from :mod:`nnunet_iph.dicom.series` (pydicom); pixels from SimpleITK's
``ImageSeriesReader`` (GDCM), which applies RescaleSlope/Intercept, so the image is in HU. That
reader assumes a regular, orthogonal slice stack; head CT often breaks this with gantry tilt
(slice positions sheared along the table) or non-uniform slice spacing (missing slices, mixed
reconstructions). Both are detected from the per-slice ImagePositionPatient and can be refused,
kept as read, or resampled onto a regular orthogonal grid (:func:`resample_irregular`); a mask
predicted on that grid goes back onto the source slices with :func:`to_source_grid`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_iph.dicom import DicomError
from nnunet_iph.dicom.series import SeriesInfo, discover_series, select_series
from nnunet_iph.imageio import sitk_message

# slice-geometry tolerances: DICOM positions are decimal strings, typically to 1e-3 mm or better
SLICE_GAP_ABS_TOL = 0.01  # mm
SLICE_GAP_REL_TOL = 0.01  # fraction of the median gap
TILT_TOL_DEG = 0.1
IOP_TOL = 1e-4
IRREGULAR_MODES = ("error", "keep", "resample")


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

    @property
    def slice_spacing(self) -> float:
        return float(np.median(self.gaps)) if self.gaps.size else 1.0

    def describe(self) -> str:
        parts = []
        if self.tilt_deg > TILT_TOL_DEG:
            parts.append(f"gantry tilt {self.tilt_deg:.2f} deg")
        if self.nonuniform:
            med = self.slice_spacing
            k = int(np.argmax(np.abs(self.gaps - med)))
            s = (self.positions - self.positions[0]) @ self.normal
            missing = round(self.gaps[k] / med) - 1
            parts.append(f"non-uniform slice spacing ({self.gaps.min():.3g}-{self.gaps.max():.3g} mm, median "
                         f"{med:.3g} mm): a {self.gaps[k]:.4g} mm gap between slices {k + 1} and {k + 2} of "
                         f"{len(self.files)} ({Path(self.files[k]).name} at {s[k]:.4g} mm, "
                         f"{Path(self.files[k + 1]).name} at {s[k + 1]:.4g} mm along the slice normal"
                         f"{f'; {missing} slice(s) missing?' if missing > 0 else ''})")
        return " and ".join(parts) if parts else "regular"


@dataclass
class DicomSeries:
    """A series read into one volume (HU), with how it was chosen among the folder's series."""

    image: sitk.Image
    geometry: SeriesGeometry
    info: SeriesInfo
    rule: str
    others: list[SeriesInfo]


def _floats(value, n: int, what: str, fname: str) -> np.ndarray:
    """A multi-valued decimal tag (pydicom value or backslash string) as ``n`` floats."""
    if isinstance(value, str) or value is None:
        items = (value or "").replace(",", "\\").split("\\")
    else:
        items = [str(v) for v in value]
    try:
        vals = np.array([float(v) for v in items if v.strip()])
    except ValueError:
        vals = np.array([])
    if vals.size != n or not np.isfinite(vals).all():
        raise DicomError(f"DICOM slice {fname}: missing or malformed {what} ({value!r})")
    return vals


def analyse_series(series: SeriesInfo, folder: Path, role: str) -> SeriesGeometry:
    """Per-slice positions and orientation -> sorted file order, gaps, tilt."""
    pos = [_floats(s.position, 3, "ImagePositionPatient (0020,0032)", s.file) for s in series.slices]
    iops = np.array([_floats(s.orientation, 6, "ImageOrientationPatient (0020,0037)", s.file)
                     for s in series.slices])
    if np.abs(iops - iops[0]).max() > IOP_TOL:
        raise DicomError(f"{role} {folder}: slices have different orientations "
                         f"(ImageOrientationPatient varies); cannot build one volume")
    row, col = iops[0, :3], iops[0, 3:]
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    normal = np.cross(row, col)
    positions = np.array(pos)
    s = positions @ normal
    order = np.argsort(s, kind="stable")
    positions, s = positions[order], s[order]
    files = [series.slices[i].file for i in order]
    gaps = np.diff(s)
    if gaps.size and gaps.min() <= SLICE_GAP_ABS_TOL:
        k = int(np.argmin(gaps))
        raise DicomError(f"{role} {folder}: two slices at the same position ({files[k]} and "
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


def _read_pixels(series: SeriesInfo, geom: SeriesGeometry, folder: Path, role: str) -> sitk.Image:
    """The sorted slices as one volume in HU, on the grid (origin, row/col/normal, median gap) of ``geom``."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(geom.files)
    rescale = {(s.slope, s.intercept) for s in series.slices}
    if len(rescale) > 1:  # GDCM picks the pixel type from one slice: keep every slice's HU exact
        reader.SetOutputPixelType(sitk.sitkFloat32)
    warnings = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK's gap warning: analyse_series says it better
    try:
        image = reader.Execute()
    except RuntimeError as err:
        bad = _first_unreadable(geom.files)
        where = f"slice {bad}" if bad else "series"
        raise DicomError(f"{role} {folder}: unreadable DICOM {where} ({sitk_message(err)})") from None
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise DicomError(f"{role} {folder}: DICOM series has {image.GetNumberOfComponentsPerPixel()} components "
                         f"per pixel (colour); expected a grey-value CT")
    image.SetOrigin(tuple(float(c) for c in geom.positions[0]))
    image.SetDirection(tuple(float(c) for c in np.column_stack([geom.row, geom.col, geom.normal]).ravel()))
    image.SetSpacing((*image.GetSpacing()[:2], geom.slice_spacing))
    return image


def _first_unreadable(files: list[str]) -> str | None:
    reader = sitk.ImageFileReader()
    for f in files:
        reader.SetFileName(f)
        try:
            reader.Execute()
        except RuntimeError:
            return f
    return None


def read_dicom_series(folder: str | os.PathLike, role: str = "image", series_uid: str | frozenset[str] | None = None,
                      require_ct: bool = True) -> DicomSeries:
    """Find the series under ``folder`` (see :func:`~nnunet_iph.dicom.series.select_series`), read it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DicomError(f"{role} {folder}: folder not found")
    found = discover_series(folder)
    info, rule = select_series(found, folder, role, series_uid, require_ct)
    if len(info.slices) < 2:
        raise DicomError(f"{role} {folder}: DICOM series has {len(info.slices)} slice(s), i.e. a 2D "
                         f"image; expected a 3D volume")
    geom = analyse_series(info, folder, role)
    image = _read_pixels(info, geom, folder, role)
    return DicomSeries(image, geom, info, rule, [s for s in found if s is not info])


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
    g = _RegularGrid(geom, arr.shape, spacing_xy)
    out_dtype = arr.dtype
    out = np.empty((g.nz, g.ny, g.nx), dtype=out_dtype)
    work = arr.astype(np.float32, copy=False)

    def shifted(k: int) -> np.ndarray:
        # target pixel (j, i) sits at in-plane offset (vmin + j*sy, umin + i*sx) from p0;
        # in slice k that is index (j + (vmin - v_k)/sy, i + (umin - u_k)/sx)
        off = _snap(((g.vmin - g.v[k]) / sy, (g.umin - g.u[k]) / sx))
        return ndimage.affine_transform(work[k], np.eye(2), offset=off, output_shape=(g.ny, g.nx),
                                        order=0 if nearest else 1, cval=fill, mode=_edge_mode(nearest))

    s = g.s
    for t in range(g.nz):
        st = t * g.dz
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
    image.SetSpacing((sx, sy, g.dz))
    image.SetOrigin(tuple(float(c) for c in g.origin))
    image.SetDirection(tuple(float(c) for c in np.column_stack([geom.row, geom.col, geom.normal]).ravel()))
    return image


def to_source_grid(resampled: np.ndarray, geom: SeriesGeometry, source_shape: tuple[int, int, int],
                   spacing_xy: tuple[float, float]) -> np.ndarray:
    """A label map on the :func:`resample_irregular` grid back onto the source slices (nearest neighbour):
    each source voxel takes the label at its own physical position, so a mask predicted on the regular
    grid lines up with the original (tilted, gapped) DICOM slices."""
    from scipy import ndimage

    sx, sy = spacing_xy
    g = _RegularGrid(geom, source_shape, spacing_xy)
    out = np.zeros(source_shape, dtype=resampled.dtype)
    for k in range(source_shape[0]):
        t = int(np.clip(np.rint(g.s[k] / g.dz), 0, resampled.shape[0] - 1))
        off = _snap(((g.v[k] - g.vmin) / sy, (g.u[k] - g.umin) / sx))
        out[k] = ndimage.affine_transform(resampled[t], np.eye(2), offset=off, output_shape=source_shape[1:],
                                          order=0, cval=0, mode=_edge_mode(True))
    return out


def _edge_mode(nearest: bool) -> str:
    """``ndimage`` boundary mode: for nearest neighbour, a point up to half a pixel beyond the edge still
    takes the edge pixel ('grid-constant'); linear interpolation stays inside the slice ('constant')."""
    return "grid-constant" if nearest else "constant"


def _snap(offset: tuple[float, float], tol: float = 1e-4) -> tuple[float, float]:
    """Whole-pixel shifts as exact integers: -0.9999999 would put an edge row a hair outside the slice,
    where ``ndimage`` returns the fill value instead of the row."""
    return tuple(float(round(o)) if abs(o - round(o)) < tol else float(o) for o in offset)


class _RegularGrid:
    """The regular orthogonal grid of :func:`resample_irregular`: slice offsets ``s`` along the normal,
    in-plane shifts ``u, v`` of each source slice, target size and origin."""

    def __init__(self, geom: SeriesGeometry, shape: tuple[int, ...], spacing_xy: tuple[float, float]):
        sx, sy = spacing_xy
        p0 = geom.positions[0]
        rel = geom.positions - p0
        self.s, self.u, self.v = rel @ geom.normal, rel @ geom.row, rel @ geom.col
        self.dz = float(np.median(np.diff(self.s)))
        self.nz = int(round((self.s[-1] - self.s[0]) / self.dz)) + 1
        self.umin, self.vmin = float(self.u.min()), float(self.v.min())
        self.nx = shape[2] + int(np.ceil((self.u.max() - self.umin) / sx - 1e-6))
        self.ny = shape[1] + int(np.ceil((self.v.max() - self.vmin) / sy - 1e-6))
        self.origin = p0 + self.umin * geom.row + self.vmin * geom.col
