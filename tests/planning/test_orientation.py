"""Plane axes from image headers; mixed orientations refused (pure SimpleITK, no nnU-Net)."""

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_iph.planning.orientation import (CANONICAL_MAPPING, MixedOrientationError, check_orientations,
                                             physical_axes_of_array, plane_transpose)

# index axis 0 -> S-I, index axis 1 -> L-R, index axis 2 -> -A-P, rotated 10 deg (columns = index axes)
_C, _S = np.cos(np.deg2rad(10)), np.sin(np.deg2rad(10))
PERMUTED = np.array([[0, _C, _S], [0, _S, -_C], [1, 0, 0]], float)


def _write(path, direction=np.eye(3), size=(6, 5, 4)):
    img = sitk.Image(*size, sitk.sitkInt16)
    img.SetDirection(tuple(np.asarray(direction, float).ravel()))
    sitk.WriteImage(img, str(path))
    return path


def test_identity_direction_gives_nnunet_style_transposes():
    assert physical_axes_of_array(np.eye(3)) == CANONICAL_MAPPING
    assert plane_transpose("axial") == ([0, 1, 2], [0, 1, 2])
    assert plane_transpose("coronal") == ([1, 0, 2], [1, 0, 2])
    assert plane_transpose("sagittal") == ([2, 0, 1], [1, 2, 0])


def test_permuted_direction_slices_along_the_anatomical_axis():
    mapping = physical_axes_of_array(PERMUTED)
    # numpy axis 0 = index axis 2 = A-P; numpy 1 = index 1 = L-R; numpy 2 = index 0 = S-I
    assert mapping == (1, 0, 2)
    assert plane_transpose("axial", mapping)[0] == [2, 0, 1]
    assert plane_transpose("coronal", mapping)[0] == [0, 1, 2]
    assert plane_transpose("sagittal", mapping)[0] == [1, 0, 2]
    for plane in ("axial", "coronal", "sagittal"):
        fwd, bwd = plane_transpose(plane, mapping)
        assert list(np.arange(3)[fwd][bwd]) == [0, 1, 2]


def test_oblique_direction_is_refused():
    c = np.cos(np.deg2rad(45))
    with pytest.raises(ValueError, match="oblique"):
        physical_axes_of_array([[c, -c, 0], [c, c, 0], [0, 0, 1]])


def test_mixed_orientations_refused_or_loudly_allowed(tmp_path, capsys):
    files = [_write(tmp_path / f"a{i}.nii.gz") for i in range(3)] + [_write(tmp_path / "odd.nii.gz", PERMUTED)]
    with pytest.raises(MixedOrientationError, match="odd.nii.gz"):
        check_orientations(files)
    with pytest.warns(UserWarning, match="mixed orientations"):
        assert check_orientations(files, allow_mixed=True) == CANONICAL_MAPPING
    assert "WARNING" in capsys.readouterr().err
    assert check_orientations(files[:3]) == CANONICAL_MAPPING


def test_flipped_axes_warn(tmp_path):
    files = [_write(tmp_path / "a.nii.gz"), _write(tmp_path / "b.nii.gz"),
             _write(tmp_path / "flip.nii.gz", np.diag([-1.0, -1.0, 1.0]))]
    with pytest.warns(UserWarning, match="flipped"):
        assert check_orientations(files) == CANONICAL_MAPPING
