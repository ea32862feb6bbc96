"""DICOM case folders for ``nnunet-iph predict``: stage as NIfTI, then masks and DICOM-SEG back.

nnU-Net reads image files, not series: each case folder's chosen series is read once (HU) and
written as ``CASE_0000.nii`` (uncompressed; the model's file ending if not NIfTI) into a private
staging folder. The mask nnU-Net writes lies on
the staged grid; for a series resampled because of gantry tilt / missing slices it is mapped back
onto the source slices, so the NIfTI mask and the DICOM-SEG always have the selected series' grid
(one mask voxel per source pixel).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from nnunet_iph.dicom import DicomError
from nnunet_iph.dicom.reader import IRREGULAR_MODES, DicomSeries, read_dicom_series, resample_irregular, \
    to_source_grid
from nnunet_iph.imageio import write_image


@dataclass
class DicomCase:
    name: str
    folder: Path
    series: DicomSeries
    handling: str  # "regular", "kept" (irregular, as read) or "resampled"
    staged: Path

    def summary(self, seg: Path | None = None) -> dict:
        g = self.series.geometry
        return {"folder": str(self.folder), "series": self.series.info.summary(), "selected_by": self.series.rule,
                "others": [o.summary() for o in self.series.others], "geometry": g.describe(),
                "tilt_deg": round(g.tilt_deg, 3), "handling": self.handling,
                "grid": {"size": list(self.series.image.GetSize()),
                         "spacing": [round(v, 6) for v in self.series.image.GetSpacing()]},
                "dicom_seg": str(seg) if seg else None}

    def describe(self) -> str:
        s = self.series
        line = f"{self.name}: series {s.info.describe()} ({s.rule}"
        line += f"; {s.geometry.describe()}, {self.handling})" if self.handling != "regular" else ")"
        lost = "not the requested series" if s.rule == "--series-uid" else "fewer slices"
        if s.others:
            line += "; also in the folder: " + "; ".join(f"{o.describe()} [{o.why_not() or lost}]" for o in s.others)
        return line


def stage_case(name: str, folder: Path, staging: Path, file_ending: str, irregular: str = "error",
               series_uids: frozenset[str] = frozenset()) -> DicomCase:
    """Read ``folder``'s series (``series_uids``: the one of them it holds, if any) and stage it."""
    if irregular not in IRREGULAR_MODES:
        raise ValueError(f"dicom_irregular {irregular!r}: choose from {IRREGULAR_MODES}")
    series = read_dicom_series(folder, "DICOM case", series_uid=series_uids)
    geom = series.geometry
    image, handling = series.image, "regular"
    if geom.irregular:
        if irregular == "error":
            raise DicomError(f"DICOM case {folder}: series {series.info.uid} has {geom.describe()}; pass "
                             f"--dicom-irregular resample (segment on a regular orthogonal grid, masks mapped back "
                             f"onto the source slices) or keep (segment the slices as read, geometry not corrected)")
        if irregular == "resample":
            arr = sitk.GetArrayFromImage(image)
            image = resample_irregular(arr, geom, image.GetSpacing()[:2], nearest=False, fill=float(arr.min()))
            handling = "resampled"
        else:
            handling = "kept"
    # uncompressed: a private, short-lived file (gzip would cost ~2 s per head CT, twice)
    staged = write_image(image, staging / f"{name}_0000{'.nii' if file_ending == '.nii.gz' else file_ending}",
                         compress=False)
    return DicomCase(name, folder, series, handling, staged)


def finish_case(case: DicomCase, mask_path: Path, labels: dict | None, seg_path: Path | None) -> Path | None:
    """Put the mask on the source grid (resampled cases; the staged image follows, for the QC views) and
    write the DICOM-SEG. Returns the SEG path."""
    src = case.series.image
    if case.handling == "resampled":
        staged_mask = sitk.ReadImage(str(mask_path))
        arr = to_source_grid(sitk.GetArrayFromImage(staged_mask), case.series.geometry,
                             tuple(reversed(src.GetSize())), src.GetSpacing()[:2])
        mask = sitk.GetImageFromArray(arr)
        mask.CopyInformation(src)
        write_image(mask, mask_path)
        write_image(src, case.staged, compress=False)
    if seg_path is None:
        return None
    from nnunet_iph.dicom.seg import write_dicom_seg

    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path)))
    return write_dicom_seg(arr, case.series.geometry.files, seg_path, labels or {"hemorrhage": 1},
                           series_description=f"nnunet-iph {case.name}")


def is_case_folder(path: os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and not p.name.startswith(".")


def check_requested_uids(cases: list[DicomCase], series_uids: frozenset[str]) -> None:
    used = {c.series.info.uid for c in cases}
    missing = sorted(series_uids - used)
    if missing:
        raise DicomError(f"--series-uid {', '.join(missing)}: no case folder holds this series")

