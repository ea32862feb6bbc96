"""Intracranial masks on synthetic heads with known anatomy (full-range and clipped HU, rotated,
anisotropic grids), bad inputs, and a few real PhysioNet scans."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_iph.brain.extraction import intracranial_mask
from nnunet_iph.brain.settings import BrainMaskSettings

# a 10-degree in-plane rotation with the axes permuted: array axis 0 is *not* the axial axis
_C, _S = np.cos(np.radians(10)), np.sin(np.radians(10))
ROTATED = np.array([[_C, 0.0, -_S], [_S, 0.0, _C], [0.0, 1.0, 0.0]])  # columns: index axes i, j, k
SPACING = (0.6, 4.0, 0.7)  # i, j (slice direction: physical z), k in mm


def synthetic_head(size=(290, 40, 290), spacing=SPACING, direction=ROTATED, skull_mm=6.0,
                   radii=(70.0, 85.0, 60.0), neck=False, gap=False):
    """(image, true intracranial mask, subdural blood mask): air -1000, scalp 40, skull 1000, CSF 8,
    brain 32, a subdural crescent of 70 HU against the inner table."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), -1).astype(float)
    centre = (np.array(size) - 1) / 2
    phys = ((idx - centre) * spacing) @ np.asarray(direction).T  # physical x, y, z in mm
    x, y, z = phys[..., 0], phys[..., 1], phys[..., 2]
    rx, ry, rz = radii

    def inside(pad):
        return (x / (rx + pad)) ** 2 + (y / (ry + pad)) ** 2 + (z / (rz + pad)) ** 2 <= 1

    cavity, skull, scalp = inside(0), inside(skull_mm) & ~inside(0), inside(skull_mm + 5) & ~inside(skull_mm)
    if gap:  # a 40 mm wide craniectomy on the right
        skull &= ~((x > rx * 0.6) & (np.abs(y) < 20) & (z > -10))
    hu = np.full(size, -1000.0)
    hu[scalp] = 40
    hu[skull] = 1000
    hu[cavity] = 32
    hu[cavity & ~inside(-4)] = 8  # CSF rim
    blood = cavity & ~inside(-6) & (x < -rx * 0.5) & (z > 0)
    hu[blood] = 70
    if neck:  # soft tissue below the skull, joined to the cavity through a foramen
        column = (x ** 2 + (y + 10) ** 2 <= 45 ** 2) & (z < -rz)
        hole = (x ** 2 + (y + 10) ** 2 <= 15 ** 2) & (z < -rz + 8) & (z >= -rz - skull_mm - 1)
        hu[column] = 40
        hu[hole] = 32
    rng = np.random.default_rng(0)
    hu += rng.normal(0, 3, size)
    arr = np.ascontiguousarray(hu.transpose(2, 1, 0)).astype(np.int16)  # (k, j, i) as SimpleITK wants
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing(spacing)
    image.SetDirection(np.asarray(direction).ravel().tolist())
    image.SetOrigin((12.5, -30.0, 7.25))
    to_arr = lambda m: np.ascontiguousarray(m.transpose(2, 1, 0))  # noqa: E731
    return image, to_arr(cavity), to_arr(blood)


def clipped(image: sitk.Image) -> sitk.Image:
    out = sitk.Clamp(image, lowerBound=-20, upperBound=100)
    out.CopyInformation(image)
    return out


def _check(image, cavity, blood, tol=0.08):
    res = intracranial_mask(image, case="synthetic")
    mask = sitk.GetArrayFromImage(res.mask).astype(bool)
    assert not res.passed_through, res.warnings
    for what in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(res.mask, what)() == getattr(image, what)(), what
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000
    true_ml = cavity.sum() * voxel_ml
    assert res.volume_ml == pytest.approx(mask.sum() * voxel_ml, rel=1e-6)
    assert abs(res.volume_ml - true_ml) / true_ml < tol, (res.volume_ml, true_ml)
    assert (mask & cavity).sum() / cavity.sum() > 0.97
    assert (mask & blood).sum() / blood.sum() > 0.99  # blood against the inner table is inside
    return res, mask


def test_full_range_hu_rotated_anisotropic():
    image, cavity, blood = synthetic_head()
    _check(image, cavity, blood)


def test_hu_clipped_at_100_like_the_physionet_copy():
    image, cavity, blood = synthetic_head()
    res, _ = _check(clipped(image), cavity, blood)
    assert any("clipped at 100" in n for n in res.notes)


def test_neck_below_the_foramen_is_not_intracranial():
    image, cavity, blood = synthetic_head(size=(290, 60, 290), neck=True)
    _check(image, cavity, blood)


def test_craniectomy_gap_keeps_the_cavity_and_the_scalp_out():
    image, cavity, blood = synthetic_head(gap=True)
    _check(image, cavity, blood, tol=0.1)


@pytest.mark.parametrize("transform, expected", [
    (lambda a: np.clip((a + 20) * 255 / 120, 0, 255), "8-bit windowed"),
    (lambda a: np.clip(a + 1000, 0, None) * 2.0, "MR-like"),
    (lambda a: a / 1000.0, "too narrow"),
    (lambda a: np.where(a > 500, 32, a), "no skull"),
    (lambda a: np.maximum(a, 20), "no negative values"),
])
def test_not_a_head_ct_in_hu_is_passed_through_with_a_warning(transform, expected):
    image, _, _ = synthetic_head(size=(150, 30, 150), spacing=(1.2, 5.0, 1.4))
    arr = transform(sitk.GetArrayFromImage(image).astype(float)).astype(np.float32)
    bad = sitk.GetImageFromArray(arr)
    bad.CopyInformation(image)
    res = intracranial_mask(bad, case="case7")
    assert res.passed_through and res.volume_ml is None
    assert len(res.warnings) == 1 and "case7" in res.warnings[0] and expected in res.warnings[0]
    assert "passed through" in res.warnings[0]
    assert sitk.GetArrayViewFromImage(res.mask).all()  # never an empty mask


def test_implausibly_small_mask_is_passed_through():
    image, _, _ = synthetic_head(size=(140, 20, 130), radii=(30.0, 35.0, 25.0), skull_mm=4.0)
    res = intracranial_mask(image, case="tiny")
    assert res.passed_through and "outside the plausible 500-3000 mL" in res.warnings[0]
    lowered = intracranial_mask(image, BrainMaskSettings(min_volume_ml=50), case="tiny")
    assert not lowered.passed_through and 50 < lowered.volume_ml < 500


def test_real_physionet_scans(physionet_dir):
    """Three real scans with hemorrhage (one whose field of view reaches far into the neck)."""
    for case in ("049", "051", "081"):
        image = sitk.ReadImage(str(physionet_dir / "ct_scans" / f"{case}.nii.gz"))
        ref = sitk.GetArrayFromImage(sitk.ReadImage(str(physionet_dir / "masks" / f"{case}.nii.gz"))) > 0
        res = intracranial_mask(image, case=case)
        mask = sitk.GetArrayFromImage(res.mask) > 0
        assert 900 <= res.volume_ml <= 2100, (case, res.volume_ml)
        assert (mask & ref).sum() / ref.sum() >= 0.95, case
