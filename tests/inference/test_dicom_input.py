"""DICOM input of ``predict``: series discovery and selection, geometry checks, HU, staging, DICOM-SEG.

Pure pydicom / SimpleITK / highdicom on tiny synthetic series (dicom_synth.py): no model, no nnU-Net.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from dicom_synth import CORONAL, DZ, NX, NY, NZ, SX, SY, hu_volume, positions, series, uid
from nnunet_iph.dicom import DicomError
from nnunet_iph.dicom.cases import finish_case, stage_case
from nnunet_iph.dicom.reader import read_dicom_series, resample_irregular, to_source_grid
from nnunet_iph.dicom.seg import read_dicom_seg, write_dicom_seg
from nnunet_iph.dicom.series import discover_series


@pytest.fixture()
def pacs_case(tmp_path):
    """A PACS-like case folder: localizer, thick and thin axial reconstructions, nested, plus clutter."""
    case = tmp_path / "case1"
    series(case / "loc", 1, hu_volume(1), [(1.0, 2.0, 3.0)], iop=CORONAL, image_type="ORIGINAL\\PRIMARY\\LOCALIZER",
           description="SCOUT")
    series(case / "a" / "thick", 2, hu_volume(3, seed=2), positions(3, dz=10.0), description="HEAD 10mm")
    series(case / "a" / "b" / "thin", 3, hu_volume(NZ, seed=3), description="HEAD 5mm")
    series(case / "cor", 4, hu_volume(8, seed=4), positions(8), iop=CORONAL, description="COR MPR")
    (case / "a" / "notes.txt").write_text("not dicom")
    (case / "a" / "b" / "thin" / "junk.dcm").write_bytes(b"\0" * 300)
    return case


def test_selection_rule_picks_thin_axial_ct_and_lists_the_others(pacs_case):
    found = discover_series(pacs_case)
    assert [len(s.slices) for s in found] == [1, 3, NZ, 8]
    assert [s.orientation for s in found] == ["coronal", "axial", "axial", "coronal"]
    got = read_dicom_series(pacs_case)
    assert got.info.uid == uid(3) and got.rule == "axial CT, not a localizer, most slices"
    reasons = {o.uid: o.why_not() for o in got.others}
    assert reasons == {uid(1): "localizer", uid(2): None, uid(4): "coronal orientation, not axial"}
    np.testing.assert_array_equal(sitk.GetArrayFromImage(got.image), hu_volume(NZ, seed=3))
    # the user's choice wins over the rule
    assert read_dicom_series(pacs_case, series_uid=uid(2)).info.uid == uid(2)
    with pytest.raises(DicomError, match=r"no series with SeriesInstanceUID 9\.9; found: .*HEAD 5mm, CT, axial, 6"):
        read_dicom_series(pacs_case, series_uid="9.9")


def test_tie_and_no_candidate_are_refused_with_the_candidates(tmp_path):
    series(tmp_path / "tie" / "x", 5, description="SOFT")
    series(tmp_path / "tie" / "y", 6, description="BONE")
    with pytest.raises(DicomError, match=rf"2 axial CT series tie at {NZ} slices: {uid(5)} \(SOFT, CT, axial, {NZ} "
                                         rf"slice\(s\)\); {uid(6)} \(BONE.*choose one with --series-uid"):
        read_dicom_series(tmp_path / "tie")
    series(tmp_path / "mr", 7, modality="MR", description="T1")
    with pytest.raises(DicomError, match=rf"no series to segment .*{uid(7)} \(T1, MR, axial, {NZ} slice\(s\)\): "
                                         r"modality MR, not CT"):
        read_dicom_series(tmp_path / "mr")
    with pytest.raises(DicomError, match="is not CT"):
        read_dicom_series(tmp_path / "mr", series_uid=uid(7))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    with pytest.raises(DicomError, match="empty: folder contains no DICOM series"):
        read_dicom_series(tmp_path / "empty")


def test_rescale_slope_intercept_gives_hu(tmp_path):
    hu = hu_volume()
    series(tmp_path / "a", 8, hu, slope=1.0, intercept=-1024.0)
    series(tmp_path / "b", 9, hu / 2.0, slope=0.5, intercept=-2048.0)  # stored = 2 * (HU + 2048)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_dicom_series(tmp_path / "a").image), hu)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_dicom_series(tmp_path / "b").image), hu / 2.0)
    # a different rescale per slice (GDCM would otherwise cast every slice to the first one's type)
    import pydicom

    files = sorted((tmp_path / "b").glob("*.dcm"))
    ds = pydicom.dcmread(files[0])
    ds.RescaleSlope, ds.RescaleIntercept = "0.25", "-1000"
    ds.save_as(files[0])
    first = (ds.pixel_array.astype(float) * 0.25 - 1000)
    got = sitk.GetArrayFromImage(read_dicom_series(tmp_path / "b").image)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got[0], first)
    np.testing.assert_array_equal(got[1:], hu[1:] / 2.0)


def test_geometry_from_the_series(tmp_path):
    got = read_dicom_series(series(tmp_path / "s", 10))
    assert got.image.GetSize() == (NX, NY, NZ)
    np.testing.assert_allclose(got.image.GetSpacing(), (SX, SY, DZ))
    np.testing.assert_allclose(got.image.GetOrigin(), (1.0, 2.0, 3.0))
    np.testing.assert_allclose(got.image.GetDirection(), np.eye(3).ravel())
    assert not got.geometry.irregular


def test_missing_slice_message_names_the_gap(tmp_path, capfd):
    folder = series(tmp_path / "gap", 11, hu_volume(NZ - 1), positions(NZ - 1, skip=(3,)))
    capfd.readouterr()
    geom = read_dicom_series(folder).geometry
    assert geom.nonuniform and geom.tilt_deg == 0
    assert capfd.readouterr().err == ""  # no ITK warning beside the one-line error
    with pytest.raises(DicomError, match=r"non-uniform slice spacing \(5-10 mm, median 5 mm\): a 10 mm gap between "
                                         r"slices 3 and 4 of 5 \(IM011_0002\.dcm at 10 mm, IM011_0003\.dcm at 20 mm "
                                         r"along the slice normal; 1 slice\(s\) missing\?\); pass --dicom-irregular"):
        stage_case("gap", folder, tmp_path / "stage", ".nii.gz")
    assert not (tmp_path / "stage").exists()  # nothing staged for a refused case


def test_tilt_refused_or_resampled_and_mask_back_on_the_source_slices(tmp_path):
    pos = positions(tilt_deg=math.degrees(math.atan(SY / DZ)))  # a shear of one row per slice: exact resampling
    hu = hu_volume()
    folder = series(tmp_path / "tilt", 12, hu, pos)
    with pytest.raises(DicomError, match=r"gantry tilt 6\.84 deg; pass --dicom-irregular resample"):
        stage_case("t", folder, tmp_path / "stage", ".nii.gz")
    case = stage_case("t", folder, tmp_path / "stage", ".nii.gz", irregular="resample")
    staged = sitk.ReadImage(str(case.staged))
    assert case.handling == "resampled" and staged.GetSize()[1] > NY  # the grid grew to hold the shear
    # a mask predicted on the regular grid, here: the staged voxels above 0 HU
    pred = (sitk.GetArrayFromImage(staged) > 0).astype(np.uint8)
    mask = sitk.GetImageFromArray(pred)
    mask.CopyInformation(staged)
    out = tmp_path / "t.nii.gz"
    sitk.WriteImage(mask, str(out))
    finish_case(case, out, {"background": 0, "hemorrhage": 1}, None)
    back = sitk.ReadImage(str(out))
    assert back.GetSize() == (NX, NY, NZ)  # the source grid
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), (hu > 0).astype(np.uint8))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(case.staged))), hu)


def test_to_source_grid_inverts_nearest_resampling(tmp_path):
    pos = positions(tilt_deg=20.0, skip=(2,))
    geom = read_dicom_series(series(tmp_path / "s", 13, hu_volume(NZ), pos)).geometry
    lab = (np.random.default_rng(5).random((NZ, NY, NX)) > 0.6).astype(np.uint8)
    regular = sitk.GetArrayFromImage(resample_irregular(lab, geom, (SX, SY), nearest=True, fill=0))
    assert regular.shape[0] == NZ + 1  # the missing slice is on the regular grid
    np.testing.assert_array_equal(to_source_grid(regular, geom, lab.shape, (SX, SY)), lab)


def test_dicom_seg_reads_back_onto_the_mask_voxels(tmp_path):
    got = read_dicom_series(series(tmp_path / "s", 14, hu_volume(), positions(), iop=(1, 0, 0, 0, -1, 0)))
    lab = np.zeros((NZ, NY, NX), np.uint8)
    lab[1:4, 2:7, 3:8] = 1
    lab[2, 4, 4] = 3  # dataset.json may skip values: segment numbers are 1..n
    path = write_dicom_seg(lab, got.geometry.files, tmp_path / "m.seg.dcm", {"background": 0, "iph": 1, "ivh": 3})
    import highdicom as hd

    seg = hd.seg.segread(str(path))
    assert [d.SegmentLabel for d in seg.SegmentSequence] == ["iph", "ivh"]
    back = read_dicom_seg(path, got.geometry.files)
    np.testing.assert_array_equal(back, np.where(lab == 3, 2, lab))
    with pytest.raises(ValueError, match=r"values \[2\] not in the labels"):
        write_dicom_seg(lab.clip(0, 2), got.geometry.files, tmp_path / "x.dcm", {"background": 0, "iph": 1})


def test_converter_fingerprint_sees_nested_series_files(tmp_path):
    """Converters skip unchanged cases by this fingerprint; the reader now looks into sub-folders, so must it."""
    import os

    from nnunet_iph.dataset_conversion.sources import source_fingerprint

    folder = series(tmp_path / "case" / "nested" / "ct", 15)
    before = source_fingerprint(tmp_path / "case")
    f = sorted(folder.glob("*.dcm"))[2]
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    assert source_fingerprint(tmp_path / "case") != before


def test_printed_line_names_the_choice_and_the_others(pacs_case, tmp_path):
    line = stage_case("case1", pacs_case, tmp_path / "stage", ".nii.gz").describe()
    assert line.startswith(f"case1: series {uid(3)} (HEAD 5mm, CT, axial, {NZ} slice(s)) (axial CT, not a localizer, "
                           f"most slices); also in the folder: {uid(1)} (SCOUT, CT, coronal, 1 slice(s)) [localizer]; ")
    assert f"{uid(2)} (HEAD 10mm, CT, axial, 3 slice(s)) [fewer slices]" in line
    picked = stage_case("case1", pacs_case, tmp_path / "stage", ".nii.gz", series_uids=frozenset({uid(2)}))
    assert f"{uid(3)} (HEAD 5mm, CT, axial, {NZ} slice(s)) [not the requested series]" in picked.describe()
