"""Finding the DICOM series in a folder tree and choosing the one to segment.

A case folder from a PACS export often holds several series (localizer, thin and thick
reconstructions, bone kernels, dose reports) in nested folders beside non-DICOM files. The rule
(:func:`select_series`): among CT series that are axial (from ImageOrientationPatient) and not a
localizer (ImageType LOCALIZER, or a single slice), take the one with the most slices; a tie is
refused, as is a folder with no such series. ``series_uid`` overrides the rule.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnunet_iph.dicom import DicomError

#: header fields read per file (no pixel data is decoded)
HEADER_TAGS = ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "SeriesNumber",
               "SeriesDescription", "Modality", "ImageType", "InstanceNumber", "ImagePositionPatient",
               "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns", "RescaleSlope", "RescaleIntercept",
               "NumberOfFrames"]
AXES = ("sagittal", "coronal", "axial")  # LPS axis the slice normal points along most


@dataclass
class SliceHeader:
    file: str
    sop_uid: str
    position: object  # raw ImagePositionPatient (parsed by the reader, which names a malformed one)
    orientation: object
    slope: float
    intercept: float
    frames: int = 1


@dataclass
class SeriesInfo:
    """One SeriesInstanceUID found under a folder; files in discovery order (the reader sorts them)."""

    uid: str
    modality: str
    description: str
    number: str
    image_type: tuple[str, ...]
    slices: list[SliceHeader] = field(default_factory=list)

    @property
    def files(self) -> list[str]:
        return [s.file for s in self.slices]

    @property
    def orientation(self) -> str:
        """'axial', 'coronal', 'sagittal' (slice normal's dominant LPS axis) or 'unknown'."""
        try:
            iop = np.array([float(v) for v in self.slices[0].orientation], float)
            normal = np.cross(iop[:3], iop[3:])
        except (TypeError, ValueError):
            return "unknown"
        if iop.size != 6 or not np.isfinite(normal).all() or np.linalg.norm(normal) < 1e-6:
            return "unknown"
        return AXES[int(np.argmax(np.abs(normal)))]

    @property
    def localizer(self) -> bool:
        return "LOCALIZER" in self.image_type or len(self.slices) == 1

    def why_not(self, require_ct: bool = True) -> str | None:
        """Why the automatic rule passes this series over; None for a candidate."""
        if any(s.frames > 1 for s in self.slices):
            return "multi-frame (enhanced) DICOM, not supported: export it as single-frame slices"
        if require_ct and self.modality != "CT":
            return f"modality {self.modality or 'missing'}, not CT"
        if self.localizer:
            return "localizer" if "LOCALIZER" in self.image_type else "single slice"
        if self.orientation != "axial":
            return f"{self.orientation} orientation, not axial"
        return None

    def describe(self) -> str:
        return (f"{self.uid} ({self.description or 'no description'}, {self.modality or '?'}, "
                f"{self.orientation}, {len(self.slices)} slice(s))")

    def summary(self) -> dict:
        return {"uid": self.uid, "description": self.description, "modality": self.modality,
                "orientation": self.orientation, "slices": len(self.slices), "image_type": list(self.image_type),
                "passed_over": self.why_not()}


def _text(ds, key: str) -> str:
    v = ds.get(key)
    return "" if v is None else str(v).strip()


def _number(ds, key: str, default: float) -> float:
    v = ds.get(key)
    try:
        return default if v is None or v == "" else float(v)
    except (TypeError, ValueError):
        raise DicomError(f"DICOM slice {ds.filename}: malformed {key} ({v!r})") from None


def discover_series(folder: str | os.PathLike) -> list[SeriesInfo]:
    """Every image series under ``folder`` (recursively; hidden entries, non-DICOM files, DICOMDIR and
    objects without pixel geometry such as SR / SEG / dose reports are skipped), by series number."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    root = Path(folder)
    found: dict[str, SeriesInfo] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            path = os.path.join(dirpath, name)
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=HEADER_TAGS)
            except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError):
                continue  # not DICOM (or no preamble): not an input file
            uid = _text(ds, "SeriesInstanceUID")
            if not uid or ds.get("ImagePositionPatient") is None and ds.get("Rows") is None:
                continue
            info = found.get(uid)
            if info is None:
                image_type = ds.get("ImageType")
                types = tuple(str(t).upper() for t in image_type) if image_type is not None else ()
                info = found[uid] = SeriesInfo(uid, _text(ds, "Modality").upper(), _text(ds, "SeriesDescription"),
                                               _text(ds, "SeriesNumber"), types)
            info.slices.append(SliceHeader(path, _text(ds, "SOPInstanceUID"), ds.get("ImagePositionPatient"),
                                           ds.get("ImageOrientationPatient"), _number(ds, "RescaleSlope", 1.0),
                                           _number(ds, "RescaleIntercept", 0.0),
                                           int(_number(ds, "NumberOfFrames", 1.0))))
    return sorted(found.values(), key=lambda s: (int(s.number) if s.number.isdigit() else 1 << 30, s.uid))


def holds_dicom(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` itself (not below) holds a DICOM file (preamble check only)."""
    for p in Path(folder).iterdir():
        if p.is_file():
            with open(p, "rb") as fh:
                head = fh.read(132)
            if head[128:132] == b"DICM":
                return True
    return False


def select_series(series: list[SeriesInfo], folder: str | os.PathLike, role: str = "image",
                  series_uid: str | frozenset[str] | None = None, require_ct: bool = True) -> tuple[SeriesInfo, str]:
    """The series to read and the rule that chose it; :class:`DicomError` listing the candidates otherwise.

    ``series_uid``: that series; a set: the one of them ``folder`` holds, else the rule."""
    listing = "; ".join(s.describe() for s in series)
    if not series:
        raise DicomError(f"{role} {folder}: folder contains no DICOM series")
    if isinstance(series_uid, (set, frozenset)):  # several cases: the requested UID this folder holds, if any
        held = [u for u in series_uid if any(s.uid == u for s in series)]
        if len(held) > 1:
            raise DicomError(f"{role} {folder}: holds several of the requested series ({', '.join(sorted(held))})")
        series_uid = held[0] if held else None
    if series_uid is not None:
        chosen = [s for s in series if s.uid == series_uid]
        if not chosen:
            raise DicomError(f"{role} {folder}: no series with SeriesInstanceUID {series_uid}; found: {listing}")
        if require_ct and chosen[0].modality != "CT":
            raise DicomError(f"{role} {folder}: series {chosen[0].describe()} is not CT; the models segment CT")
        return chosen[0], "--series-uid"
    candidates = [s for s in series if s.why_not(require_ct) is None]
    if not candidates:
        why = "; ".join(f"{s.describe()}: {s.why_not(require_ct)}" for s in series)
        raise DicomError(f"{role} {folder}: no series to segment among {len(series)} DICOM series (needs axial "
                         f"CT, not a localizer or single slice): {why}")
    most = max(len(s.slices) for s in candidates)
    best = [s for s in candidates if len(s.slices) == most]
    if len(best) > 1:
        raise DicomError(f"{role} {folder}: folder contains {len(series)} DICOM series and {len(best)} axial CT "
                         f"series tie at {most} slices: {'; '.join(s.describe() for s in best)}; choose one "
                         f"with --series-uid UID")
    rule = "only series" if len(series) == 1 else "axial CT, not a localizer, most slices"
    return best[0], rule
