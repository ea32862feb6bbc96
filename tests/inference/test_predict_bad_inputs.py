"""``predict``'s bad inputs: each one a one-line error naming the file, exit 2, nothing written.

The inputs are checked before any model is loaded, so a model folder holding only dataset.json
is enough here (no torch model, no nnU-Net run).
"""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import SimpleITK as sitk

from dicom_synth import series
from nnunet_iph.imageio import InputError
from nnunet_iph.inference.predict import PredictSettings, Timing, gather_inputs
from tests.conftest import run_cli


def _ct(path, shape=(4, 8, 8)):
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros(shape, np.int16)), str(path))
    return path


def _gather(folder, tmp_path, **kw):
    return gather_inputs(folder, ".nii.gz", 1, tmp_path / "stage", PredictSettings(**kw), Timing())


@pytest.mark.parametrize("defect, message", [
    ("empty", r"input image .*bad\.nii\.gz: empty file \(0 bytes\)"),
    ("truncated", r"input image .*bad\.nii\.gz: truncated"),
    ("corrupt", r"input image .*bad\.nii\.gz: unreadable"),
    ("rgb", r"input image .*bad\.nii\.gz: 3 components per pixel \(RGB / vector image\)"),
    ("2d", r"input image .*bad\.nii\.gz: 2D image \(size 8x6\); expected a 3D CT volume"),
])
def test_bad_image_is_refused_naming_the_file(tmp_path, defect, message):
    folder = tmp_path / "in"
    folder.mkdir()
    _ct(folder / "good.nii.gz")
    bad = folder / "bad.nii.gz"
    if defect == "empty":
        bad.touch()
    elif defect == "truncated":
        data = gzip.decompress(_ct(bad).read_bytes())
        bad.write_bytes(gzip.compress(data[: len(data) // 2]))
    elif defect == "corrupt":
        bad.write_bytes(b"\x00not an image" * 50)
    elif defect == "rgb":
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 8, 8, 3), np.uint8), isVector=True), str(bad))
    else:
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((6, 8), np.int16)), str(bad))
    with pytest.raises(InputError, match=message):
        _gather(folder, tmp_path)


def test_no_usable_input(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "readme.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"in: no usable input: no \.nii\.gz files and no case folders"):
        _gather(tmp_path / "in", tmp_path)
    (tmp_path / "in" / "patient7").mkdir()
    (tmp_path / "in" / "patient7" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=r"DICOM case .*patient7: folder contains no DICOM series"):
        _gather(tmp_path / "in", tmp_path)


def test_dicom_and_file_cases_together(tmp_path):
    folder = tmp_path / "in"
    series(folder / "p1" / "ct", 21)
    _ct(folder / "p2.nii.gz")
    cases, dicom = _gather(folder, tmp_path)
    assert list(cases) == ["p1", "p2"] and [c.name for c in dicom] == ["p1"]
    assert cases["p1"] == [str(tmp_path / "stage" / "p1_0000.nii")]
    with pytest.raises(InputError, match=r"--series-uid 1\.2\.3: no case folder holds this series"):
        _gather(folder, tmp_path, series_uids=("1.2.3",))


@pytest.fixture()
def fake_model(tmp_path):
    model = tmp_path / "Dataset999_Fake" / "nnUNetTrainer__nnUNetPlans__2d"
    model.mkdir(parents=True)
    (model / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "file_ending": ".nii.gz",
                                                    "labels": {"background": 0, "hemorrhage": 1}}))
    return model


def test_cli_exit_2_one_line_nothing_written(tmp_path, fake_model):
    folder = tmp_path / "in"
    folder.mkdir()
    _ct(folder / "a.nii.gz")
    data = _ct(folder / "b.nii.gz", (8, 32, 32)).read_bytes()
    (folder / "b.nii.gz").write_bytes(data[: len(data) // 2])  # a copy cut short
    out = tmp_path / "out"
    proc = run_cli("nnunet-iph", "predict", "-i", str(folder), "-o", str(out), "-m", str(fake_model),
                   "--device", "cpu", check=False, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert f"nnunet-iph predict: error: input image {folder / 'b.nii.gz'}: truncated or corrupt gzip" in proc.stderr
    assert not out.exists()


def test_output_that_is_a_file(tmp_path, fake_model):
    from nnunet_iph.ensembling.ensemble import ModelRef
    from nnunet_iph.inference.predict import predict

    (tmp_path / "in").mkdir()
    _ct(tmp_path / "in" / "a.nii.gz")
    out_file = tmp_path / "out.txt"
    out_file.write_text("keep me")
    with pytest.raises(ValueError, match=rf"output {out_file}: exists and is not a folder"):
        predict(tmp_path / "in", out_file, "single", [ModelRef(fake_model)])
    assert out_file.read_text() == "keep me"


def test_dicom_files_directly_in_the_input_folder(tmp_path):
    series(tmp_path / "in", 22)
    with pytest.raises(ValueError, match=r"in: holds DICOM files itself; -i takes a folder of cases"):
        _gather(tmp_path / "in", tmp_path)


def test_output_folder_inside_the_input_is_not_a_case(tmp_path):
    folder = tmp_path / "in"
    _ct(folder.mkdir() or folder / "a.nii.gz")
    (folder / "pred").mkdir()
    (folder / "pred" / "a.nii.gz").write_bytes(b"")
    cases, _ = gather_inputs(folder, ".nii.gz", 1, tmp_path / "stage", PredictSettings(), Timing(), folder / "pred")
    assert list(cases) == ["a"]
