"""ABC/2 (Kothari 1996) and lesion counts against hand-computed boxes and ellipsoids (pure numpy/SimpleITK).

Point convention (nnunet_iph.inference.abc2): the lesion is the union of its pixel squares, A is the
longest corner-to-corner distance, B the width perpendicular to A. Hence for a box of a x b mm
(whole pixels) A = sqrt(a^2 + b^2), B = 2ab / sqrt(a^2 + b^2), so A * B = 2ab and, with every slice
at full area (C = height h), ABC/2 = a * b * h: exactly the box's volume.
"""

import math

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_iph.imageio import InputError
from nnunet_iph.inference.abc2 import diameters, slice_weight, summarize_lesions
from nnunet_iph.inference.volumes import mask_volumes, volume_row

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
SPACING = (0.4, 0.7, 5.0)  # x, y in-plane (anisotropic), 5 mm slices


def _image(arr, spacing=SPACING, direction=IDENTITY):
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.SetSpacing(spacing)
    img.SetDirection(direction)
    return img


def _row(arr, spacing=SPACING, direction=IDENTITY):
    img = _image(arr, spacing, direction)
    return volume_row(img, sitk.GetArrayViewFromImage(img))


def test_box_a_b_c_and_abc2_equal_the_box_volume():
    arr = np.zeros((8, 30, 40))
    arr[2:6, 5:15, 5:25] = 1  # 20 px x 0.4 = 8 mm (x), 10 px x 0.7 = 7 mm (y), 4 slices x 5 = 20 mm
    r = _row(arr)
    assert r["abc2_a_mm"] == pytest.approx(math.sqrt(8 ** 2 + 7 ** 2), abs=1e-3)  # 10.630
    assert r["abc2_b_mm"] == pytest.approx(2 * 8 * 7 / math.sqrt(113), abs=1e-3)  # 10.536
    assert r["abc2_c_mm"] == 20.0
    assert r["abc2_ml"] == pytest.approx(8 * 7 * 20 / 1000)  # 1.12 mL = the box
    assert r["hemorrhage_ml"] == pytest.approx(800 * 0.4 * 0.7 * 5 / 1000) == r["largest_lesion_ml"]
    assert r["n_lesions"] == 1 and r["abc2_slice"] == 2


def test_single_voxel_is_a_box_of_one_pixel():
    arr = np.zeros((3, 4, 4))
    arr[1, 2, 3] = 1
    r = _row(arr)
    assert r["abc2_a_mm"] == pytest.approx(math.hypot(0.4, 0.7), abs=1e-3)
    assert r["abc2_ml"] == pytest.approx(0.4 * 0.7 * 5 / 1000, rel=1e-4) == r["voxel_ml"]


def test_c_weights_on_the_kothari_thresholds():
    assert [slice_weight(x) for x in (1.0, 0.75, 0.7499, 0.25, 0.2499, 0.0)] == [1, 1, 0.5, 0.5, 0, 0]
    arr = np.zeros((7, 14, 24))
    # rectangles sharing one corner (connected); areas relative to the largest (200 px):
    arr[1, 0:2, 0:20] = 1    # 40 px = 20 %  -> 0
    arr[2, 0:10, 0:5] = 1    # 50 px = 25 %  -> 0.5
    arr[3, 0:10, 0:20] = 1   # 200 px        -> 1 (the A/B slice: first of the tie)
    arr[4, 0:10, 0:20] = 1   # 200 px        -> 1
    arr[5, 0:10, 0:15] = 1   # 150 px = 75 % -> 1
    r = _row(arr)
    assert r["abc2_c_mm"] == pytest.approx((0 + 0.5 + 1 + 1 + 1) * 5.0)  # 17.5 mm
    assert r["abc2_slice"] == 3
    assert r["abc2_ml"] == pytest.approx(2 * 8 * 7 * 17.5 / 2 / 1000)  # A*B = 2ab: 0.98 mL
    arr[5, 0:10, 14] = 0     # 140 px = 70 % -> 0.5
    assert _row(arr)["abc2_c_mm"] == pytest.approx(15.0)


def _ellipsoid(radii_mm, spacing, angle_deg=0.0, half_extent=(40, 40, 4)):
    """Voxel centres strictly inside an ellipsoid centred on a voxel centre; semi-axis 0 rotated in-plane."""
    nx, ny, nz = half_extent
    z, y, x = np.meshgrid(np.arange(-nz, nz + 1) * spacing[2], np.arange(-ny, ny + 1) * spacing[1],
                          np.arange(-nx, nx + 1) * spacing[0], indexing="ij")
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    u, v = c * x + s * y, -s * x + c * y
    ra, rb, rc = radii_mm
    return ((u / ra) ** 2 + (v / rb) ** 2 + (z / rc) ** 2 < 1).astype(np.uint8)


@pytest.mark.parametrize("angle", [0.0, 30.0])
def test_ellipsoid_on_anisotropic_grid(angle):
    """Semi-axes 12, 8, 15 mm on 0.45 x 0.6 x 5 mm voxels, slices at z = 0, +-5, +-10 mm (+-15: empty).

    By hand: slice areas relative to z = 0 are 1 - (z/15)^2 = 8/9 (weight 1) at +-5 mm and 5/9 (0.5)
    at +-10 mm, so C = (1 + 2 + 1) x 5 = 20 mm. A = 24 mm and B = 16 mm up to the voxelisation: the
    hull of the pixel squares differs from the ellipse by less than one pixel diagonal (0.75 mm) in
    each diameter, whatever the in-plane rotation. ABC/2 = 24 * 16 * 20 / 2 = 3.84 mL (tolerance
    0.75/24 + 0.75/16 = 8 %). The true volume is 4/3 pi 12 8 15 = 6.03 mL: with Kothari's slice
    weights ABC/2 / volume = 1.5 C / (pi rc) = 0.637 for this ellipsoid (C = 2 rc, no weights, gives
    3/pi = 0.955, the 1/2 ~ pi/6 approximation).
    """
    spacing = (0.45, 0.6, 5.0)
    r = _row(_ellipsoid((12.0, 8.0, 15.0), spacing, angle), spacing)
    diag = math.hypot(0.45, 0.6)
    assert abs(r["abc2_a_mm"] - 24.0) <= diag and abs(r["abc2_b_mm"] - 16.0) <= diag
    assert r["abc2_c_mm"] == 20.0 and r["abc2_slice"] == 4
    assert r["abc2_ml"] == pytest.approx(3.84, rel=0.08)
    true_ml = 4 / 3 * math.pi * 12 * 8 * 15 / 1000
    assert r["abc2_ml"] / true_ml == pytest.approx(1.5 * 20 / (math.pi * 15), rel=0.08)
    assert r["hemorrhage_ml"] == pytest.approx(true_ml, rel=0.1)  # planimetry of 5 mm slices


def test_diameters_use_pixel_corners_on_anisotropic_pixels():
    """A 3 x 1 px bar on 1 mm (rows) x 2 mm (columns) pixels is a 3 x 2 mm rectangle."""
    section = np.zeros((5, 5), bool)
    section[1:4, 2] = True  # rows (spacing 1 mm) x columns (spacing 2 mm)
    a, b = diameters(section, (1.0, 2.0))
    assert a == pytest.approx(math.hypot(2, 3)) and b == pytest.approx(2 * 2 * 3 / math.hypot(2, 3))


def _permuted(arr, flip_y: bool):
    """The same box stored with the S-I axis as index axis i (numpy axis 2), y optionally reversed."""
    arr_p = arr.transpose(2, 1, 0)  # numpy (x, y, z): index k -> x, j -> y, i -> z
    if flip_y:
        arr_p = arr_p[:, ::-1, :]
    direction = (0.0, 0.0, 1.0, 0.0, -1.0 if flip_y else 1.0, 0.0, 1.0, 0.0, 0.0)
    return np.ascontiguousarray(arr_p), (SPACING[2], SPACING[1], SPACING[0]), direction


@pytest.mark.parametrize("flip_y", [False, True])
def test_axial_axis_read_from_the_direction_matrix(tmp_path, flip_y):
    arr = np.zeros((8, 30, 40))
    arr[2:6, 5:15, 5:25] = 1
    arr[2, 5:15, 5:15] = 0  # slice 2 at 50 % (weight 0.5), slices 3-5 full: C = 3.5 * 5 = 17.5 mm
    expected = _row(arr)
    arr_p, spacing, direction = _permuted(arr, flip_y)
    path = tmp_path / "permuted.nii.gz"
    sitk.WriteImage(_image(arr_p, spacing, direction), str(path))
    got = mask_volumes(path)
    for key in ("abc2_a_mm", "abc2_b_mm", "abc2_c_mm", "abc2_ml", "abc2_slice", "hemorrhage_ml"):
        assert got[key] == pytest.approx(expected[key]), key
    assert expected["abc2_c_mm"] == 17.5 and expected["abc2_slice"] == 3


def test_oblique_direction_is_refused_with_the_file_name(tmp_path):
    c = math.sqrt(0.5)
    path = tmp_path / "oblique.nii.gz"
    sitk.WriteImage(_image(np.ones((2, 2, 2)), direction=(c, -c, 0, c, c, 0, 0, 0, 1)), str(path))
    assert mask_volumes(path)["n_lesions"] == 1  # rotated about S-I: still axial slices
    sitk.WriteImage(_image(np.ones((2, 2, 2)), direction=(1, 0, 0, 0, c, -c, 0, c, c)), str(path))
    with pytest.raises(InputError, match=r"oblique\.nii\.gz: no array axis follows the S-I axis"):
        mask_volumes(path)


def test_lesions_are_26_connected_and_abc2_is_of_the_largest():
    arr = np.zeros((6, 20, 20))
    arr[1, 1, 1] = arr[2, 2, 2] = 1        # corner-touching: one lesion of 2 voxels
    arr[1:5, 10:18, 10:18] = 1             # 8 x 8 px, 4 slices: the largest (256 voxels)
    arr[1, 1, 5] = 1                       # a gap of 1 voxel: a third lesion
    r = _row(arr, (1.0, 1.0, 2.0))
    assert r["n_lesions"] == 3 and r["n_voxels"] == 259
    assert r["largest_lesion_ml"] == pytest.approx(256 * 2 / 1000)
    assert r["abc2_a_mm"] == pytest.approx(8 * math.sqrt(2), abs=1e-3)  # the small ones do not widen A
    assert r["abc2_ml"] == pytest.approx(8 * 8 * 8 / 1000)  # box: ABC/2 = its volume


def test_empty_mask():
    r = _row(np.zeros((3, 5, 5)))
    assert (r["hemorrhage_ml"], r["n_lesions"], r["largest_lesion_ml"], r["abc2_ml"]) == (0, 0, 0, 0)
    assert r["abc2_slice"] is None and summarize_lesions(np.zeros((2, 2, 2)), SPACING, IDENTITY).abc2 is None
