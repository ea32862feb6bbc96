"""Tiny synthetic DICOM series for the DICOM tests (written by nnunet_iph.dicom.writer: SimpleITK + pydicom)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from nnunet_iph.dicom.writer import SeriesTags, write_ct_series

NZ, NY, NX = 6, 12, 10
SX, SY, DZ = 0.5, 0.6, 5.0
AXIAL = (1, 0, 0, 0, 1, 0)
CORONAL = (1, 0, 0, 0, 0, -1)
STUDY = "1.2.826.0.1.3680043.2.1125.77"


def uid(n: int) -> str:
    return f"{STUDY}.{n}"


def hu_volume(nz: int = NZ, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1024, 1500, (nz, NY, NX)).astype(np.int16)


def positions(nz: int = NZ, dz: float = DZ, tilt_deg: float = 0.0, skip: tuple[int, ...] = ()):
    """ImagePositionPatient per slice: along z, sheared along y by the gantry tilt, ``skip``: missing slices."""
    t = math.tan(math.radians(tilt_deg))
    return [(1.0, 2.0 + k * dz * t, 3.0 + k * dz) for k in range(nz + len(skip)) if k not in skip]


def series(folder: Path, n: int, hu: np.ndarray | None = None, pos=None, iop=AXIAL, **tags) -> Path:
    """Series ``uid(n)`` of ``hu`` (default: random HU, NZ slices) into ``folder``."""
    hu = hu_volume() if hu is None else hu
    pos = positions(len(hu)) if pos is None else pos
    write_ct_series(hu, folder, SeriesTags(uid(n), STUDY, series_number=n, **tags), (SX, SY), iop, pos)
    return folder
