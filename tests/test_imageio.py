"""The shared reader and atomic writers every command uses, and the worker pool."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_iph.imageio import InputError, read_image, write_image, write_json, write_text
from nnunet_iph.parallel import run_jobs


def _image(value: int) -> sitk.Image:
    return sitk.GetImageFromArray(np.full((3, 4, 5), value, np.uint8))


def test_reads_exactly_the_named_file_beside_a_stale_sibling(tmp_path):
    write_image(_image(1), tmp_path / "X.nii.gz")
    sitk.WriteImage(_image(2), str(tmp_path / "X.nii"))  # ITK itself would open this one for X.nii.gz
    assert np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "X.nii.gz")))).tolist() == [2]
    assert np.unique(sitk.GetArrayFromImage(read_image(tmp_path / "X.nii.gz"))).tolist() == [1]
    assert np.unique(sitk.GetArrayFromImage(read_image(tmp_path / "X.nii"))).tolist() == [2]


@pytest.mark.parametrize("defect, message", [
    ("missing", "file not found"), ("empty", r"empty file \(0 bytes\)"), ("folder", "is a folder"),
    ("truncated", "truncated"), ("garbage", "unreadable"),
])
def test_bad_files_are_refused_naming_the_file(tmp_path, defect, message):
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(0).integers(-1000, 1000, (20, 64, 64), np.int16)),
                    str(path))
    data = path.read_bytes()
    if defect == "missing":
        path.unlink()
    elif defect == "empty":
        path.write_bytes(b"")
    elif defect == "folder":
        path.unlink()
        path.mkdir()
    elif defect == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:
        (tmp_path / "ct.nrrd").write_bytes(b"not an image at all")
        path = tmp_path / "ct.nrrd"
    with pytest.raises(InputError, match=message) as err:
        read_image(path, "CT")
    assert str(err.value).startswith(f"CT {path}")


def test_nan_in_float_nifti_is_refused(tmp_path):
    arr = np.zeros((3, 4, 5), np.float32)
    arr[1, 2, 3] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / "p.nii.gz"))
    with pytest.raises(InputError, match="1 NaN"):
        read_image(tmp_path / "p.nii.gz")


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_follow_the_umask_not_mkstemps_0600(tmp_path, umask):
    old = os.umask(umask)
    try:
        paths = [write_text("x", tmp_path / "a.txt"), write_json({"a": 1}, tmp_path / "b.json"),
                 write_image(_image(1), tmp_path / "c.nii.gz")]
    finally:
        os.umask(old)
    for p in paths:
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o666 & ~umask, p
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.json", "c.nii.gz"]  # no temporary left


def test_a_failed_write_leaves_neither_the_target_nor_a_temporary(tmp_path):
    with pytest.raises(TypeError):
        write_text(None, tmp_path / "x.txt")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError):
        write_text("x", tmp_path / "folder")


def _square(x: int) -> int:
    if x == 99:
        raise ValueError("job 99 failed")
    return x * x


@pytest.mark.parametrize("workers", [1, 2])
def test_run_jobs_orders_results_and_propagates_errors(workers):
    assert list(run_jobs(_square, [3, 1, 2], workers)) == [(3, 9), (1, 1), (2, 4)]
    assert sorted(run_jobs(_square, [3, 1, 2], workers, ordered=False)) == [(1, 1), (2, 4), (3, 9)]
    with pytest.raises(ValueError, match="job 99 failed"):
        list(run_jobs(_square, [1, 99, 2], workers))
