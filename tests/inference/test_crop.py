"""Inference on a brain crop: crop + paste back are exact sub-grid operations (anisotropic, permuted and
tilted direction), margins clip at the border, a passed-through brain mask means no crop, and through
the real CLI the masks with and without ``--brain-crop`` are identical."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import SimpleITK as sitk

from geom_synth import DIRECTION, GEOM_ID, SPACING, make_case, run_cli
from nnunet_iph.inference.crop import CropBox, brain_box, crop_cases, crop_image, paste_array, paste_image

# a second anisotropic grid for the unit tests: permuted axes, tilted, thick middle axis
_C, _S = np.cos(np.deg2rad(17)), np.sin(np.deg2rad(17))
ROTATED = np.array([[0.0, _C, -_S], [1.0, 0.0, 0.0], [0.0, _S, _C]])


def _image(size=(37, 21, 30), spacing=(0.7, 4.0, 1.3), seed=0) -> sitk.Image:
    arr = np.random.default_rng(seed).normal(size=size[::-1]).astype(np.float32)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetDirection(tuple(ROTATED.ravel()))
    img.SetOrigin((11.5, -73.25, 4.125))
    return img


def _mask_like(img: sitk.Image, lo: tuple[int, int, int], hi: tuple[int, int, int]) -> sitk.Image:
    """1 on the index box lo..hi (inclusive, SimpleITK order)."""
    arr = np.zeros(img.GetSize()[::-1], np.uint8)
    arr[lo[2]:hi[2] + 1, lo[1]:hi[1] + 1, lo[0]:hi[0] + 1] = 1
    mask = sitk.GetImageFromArray(arr)
    mask.CopyInformation(img)
    return mask


def synthetic_head(seed: int = 0, size=(44, 240, 200)) -> sitk.Image:
    """A head CT in HU on the geometry dataset's grid (axial = index axis 0, 4 mm; tilted, permuted):
    air, scalp, a 6 mm skull, and a brain whose values straddle 0.5 HU voxel by voxel (so the oracle
    model's mask there is salt and pepper: a one-voxel shift anywhere shows)."""
    rng = np.random.default_rng(seed)
    shape = size[::-1]
    k, j, i = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, SPACING[::-1])), indexing="ij")
    c = (0.55 * size[0] * SPACING[0], 0.5 * size[1] * SPACING[1], 0.45 * size[2] * SPACING[2])
    r = np.sqrt(((i - c[0]) / 62) ** 2 + ((j - c[1]) / 70) ** 2 + ((k - c[2]) / 85) ** 2)
    arr = rng.normal(-1000, 5, shape)
    arr[r < 1.12] = rng.normal(40, 5, int((r < 1.12).sum()))
    arr[r < 1.08] = 1200.0
    arr[r < 1.0] = rng.uniform(-10, 11, int((r < 1.0).sum()))
    img = sitk.GetImageFromArray(arr.astype(np.float32))
    img.SetSpacing(SPACING)
    img.SetDirection(tuple(DIRECTION.ravel()))
    img.SetOrigin((-12.3, 40.1, 7.7))
    return img


def test_brain_box_adds_the_margin_in_whole_voxels_per_axis():
    img = _image()
    box = brain_box(_mask_like(img, (10, 5, 12), (20, 8, 15)), margin_mm=5.0)
    # ceil(5 / 0.7) = 8, ceil(5 / 4.0) = 2, ceil(5 / 1.3) = 4 voxels
    assert box == CropBox((2, 3, 8), (27, 8, 12), (37, 21, 30))
    assert brain_box(_mask_like(img, (10, 5, 12), (20, 8, 15)), margin_mm=0.0) == CropBox((10, 5, 12), (11, 4, 4),
                                                                                      (37, 21, 30))


def test_margin_is_clipped_at_the_image_border():
    img = _image()
    box = brain_box(_mask_like(img, (0, 19, 1), (3, 20, 28)), margin_mm=10.0)
    assert box.index == (0, 16, 0) and box.size == (3 + 15 + 1, 5, 30)  # i: 0..18, j: 16..20, k: whole
    assert brain_box(_mask_like(img, (0, 0, 0), (36, 20, 29)), 10.0) == CropBox((0, 0, 0), (37, 21, 30),
                                                                                (37, 21, 30))


def test_empty_mask_has_no_box_and_a_negative_margin_is_refused():
    img = _image()
    assert brain_box(_mask_like(img, (1, 1, 1), (0, 0, 0)), 5.0) is None
    with pytest.raises(ValueError, match="must be >= 0"):
        brain_box(_mask_like(img, (1, 1, 1), (2, 2, 2)), -1.0)


def test_crop_is_a_sub_grid_and_a_mask_made_on_it_pastes_onto_the_same_physical_points(tmp_path):
    img = _image()
    box = brain_box(_mask_like(img, (10, 5, 12), (20, 8, 15)), margin_mm=5.0)
    cropped = crop_image(img, box)
    assert cropped.GetSpacing() == img.GetSpacing() and cropped.GetDirection() == img.GetDirection()
    assert cropped.GetOrigin() == img.TransformIndexToPhysicalPoint(box.index)
    assert np.array_equal(sitk.GetArrayViewFromImage(cropped), sitk.GetArrayViewFromImage(img)[box.slices])
    # a "prediction" on the crop, through a NIfTI file (float32 header) as nnU-Net writes it
    pred = sitk.GetImageFromArray((sitk.GetArrayFromImage(cropped) > 0.3).astype(np.uint8))
    pred.CopyInformation(cropped)
    sitk.WriteImage(pred, str(tmp_path / "pred.nii.gz"))
    pred = sitk.ReadImage(str(tmp_path / "pred.nii.gz"))
    pasted = paste_image(pred, box, img)
    assert (pasted.GetSize(), pasted.GetSpacing(), pasted.GetOrigin(), pasted.GetDirection()) == \
        (img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection())
    full = sitk.GetArrayFromImage(pasted)
    assert full.sum() == sitk.GetArrayFromImage(pred).sum() > 0
    assert np.array_equal(full[box.slices], sitk.GetArrayFromImage(pred))
    for idx in np.argwhere(sitk.GetArrayFromImage(pred) > 0)[::7]:
        ijk = tuple(int(v) for v in idx[::-1])
        target = tuple(a + b for a, b in zip(ijk, box.index))
        assert pasted[target] == 1
        assert np.allclose(pred.TransformIndexToPhysicalPoint(ijk), pasted.TransformIndexToPhysicalPoint(target),
                           atol=1e-4)


def test_a_crop_mask_that_is_not_where_the_crop_was_cut_is_refused():
    img = _image()
    box = brain_box(_mask_like(img, (10, 5, 12), (20, 8, 15)), margin_mm=5.0)
    pred = sitk.Cast(crop_image(img, box) > 0, sitk.sitkUInt8)
    pred.SetOrigin(tuple(o + 0.35 for o in pred.GetOrigin()))  # half a voxel off
    with pytest.raises(ValueError, match="not the crop cut at index"):
        paste_image(pred, box, img, "x.nii.gz")
    with pytest.raises(ValueError, match="size"):
        paste_image(sitk.RegionOfInterest(crop_image(img, box), (3, 3, 3), (0, 0, 0)), box, img)


def test_probabilities_are_pasted_with_a_fill_per_channel():
    box = CropBox((1, 0, 2), (2, 1, 1), (4, 2, 3))
    probs = np.full((2, 1, 1, 2), 0.25, np.float32)
    full = paste_array(probs, box, np.array([1.0, 0.0], np.float32))
    assert full.shape == (2, 3, 2, 4)
    assert full[:, 2, 0, 1:3].tolist() == [[0.25, 0.25], [0.25, 0.25]]
    assert full[0].sum() == 24 - 2 + 0.5 and full[1].sum() == 0.5


def test_crop_cases_crops_a_head_and_passes_other_images_through(tmp_path):
    head, other = tmp_path / "head_0000.nii.gz", tmp_path / "synth_0000.nii.gz"
    sitk.WriteImage(synthetic_head(), str(head))
    sitk.WriteImage(make_case(1, (9, 30, 24))[0], str(other))  # 0..1 intensities: not HU
    files, crops = crop_cases({"head": [str(head)], "synth": [str(other)]}, tmp_path / "crops", 10.0, ".nii.gz")
    assert files["synth"] == [str(other)] and crops["synth"].box is None
    assert "passed through" in crops["synth"].reason
    box = crops["head"].box
    assert crops["head"].reason == "cropped" and 0.3 < box.voxel_share < 0.9
    staged = sitk.ReadImage(files["head"][0])
    assert files["head"][0].endswith(".nii") and staged.GetSize() == box.size
    assert np.allclose(staged.GetOrigin(), sitk.ReadImage(str(head)).TransformIndexToPhysicalPoint(box.index),
                       atol=1e-4)
    with pytest.raises(ValueError, match="margin"):
        crop_cases({"head": [str(head)]}, tmp_path / "crops2", -2.0, ".nii.gz")


@pytest.mark.slow  # plans of the geometry dataset + two CLI predictions (~1 min)
def test_cli_masks_with_and_without_brain_crop_are_identical(geom_dataset, tmp_path):
    """The oracle model is pointwise and the head is on the plans' own spacing (no resampling), so the
    crop changes nothing but the tiling: the masks must agree voxel for voxel, everywhere."""
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    src = tmp_path / "in"
    src.mkdir()
    sitk.WriteImage(synthetic_head(), str(src / "head_0000.nii.gz"))
    (src / "synth_0000.nii.gz").symlink_to(geom_dataset.raw / "imagesTs" / "case04_0000.nii.gz")
    outs = {}
    for name, extra in (("full", ()), ("crop", ("--brain-crop",))):
        outs[name] = tmp_path / name
        run_cli("nnunet-iph", "predict", "-i", str(src), "-o", str(outs[name]), "-d", str(GEOM_ID), "-m",
                "nnUNetTrainerOracle__nnUNetPlans_axial__2d", "--device", "cpu", "--disable-tta", "--no-qc",
                "--save-probabilities", *extra, env=geom_dataset.env())
    info = json.loads((outs["crop"] / "pipeline.json").read_text(encoding="utf-8"))["brain_crop"]
    assert info["margin_mm"] == 10.0
    assert info["cases"]["head"]["cropped"] and info["cases"]["head"]["voxel_share"] < 0.9
    assert not info["cases"]["synth"]["cropped"]
    for case in ("head", "synth"):
        image = sitk.ReadImage(str(src / f"{case}_0000.nii.gz"))
        full, crop = (sitk.ReadImage(str(outs[n] / f"{case}.nii.gz")) for n in ("full", "crop"))
        for a in (full, crop):
            assert a.GetSize() == image.GetSize() and np.allclose(a.GetOrigin(), image.GetOrigin(), atol=1e-4)
            assert np.allclose(a.GetDirection(), image.GetDirection(), atol=1e-6)
            assert np.allclose(a.GetSpacing(), image.GetSpacing(), atol=1e-6)
        a, b = sitk.GetArrayFromImage(full), sitk.GetArrayFromImage(crop)
        assert 0.05 < a.mean() < 0.95 and np.array_equal(a, b), case
        pa, pb = (np.load(outs[n] / f"{case}.npz")["probabilities"] for n in ("full", "crop"))
        assert pa.shape == pb.shape and np.abs(pa - pb).max() < 1e-2
        with open(outs["crop"] / f"{case}.pkl", "rb") as f:  # the pasted properties re-export onto the input grid
            props = pickle.load(f)
        SimpleITKIO().write_seg(pb.argmax(0).astype(np.uint8), str(tmp_path / f"{case}_re.nii.gz"), props)
        re = sitk.ReadImage(str(tmp_path / f"{case}_re.nii.gz"))
        assert np.array_equal(sitk.GetArrayFromImage(re), b)
        assert np.allclose(re.GetOrigin(), image.GetOrigin(), atol=1e-4)


def test_cli_option_default_margin():
    from nnunet_iph.cli import build_parser
    from nnunet_iph.inference.crop import DEFAULT_MARGIN_MM

    parse = build_parser().parse_args
    assert parse(["predict", "-i", "a", "-o", "b", "--brain-crop"]).brain_crop == DEFAULT_MARGIN_MM == 10.0
    assert parse(["predict", "-i", "a", "-o", "b", "--brain-crop", "4.5", "-m", "x"]).brain_crop == 4.5
    assert parse(["predict", "-i", "a", "-o", "b"]).brain_crop is None


def _stripped_copy(head: sitk.Image) -> sitk.Image:
    """``head`` skull-stripped as a ``--brain-mask`` conversion does it (default settings, fill = minimum)."""
    from nnunet_iph.brain.settings import BrainMaskSettings
    from nnunet_iph.inference.model_inputs import skull_strip

    stripped = skull_strip(head, BrainMaskSettings(), None, "head")
    assert not stripped.passed_through
    return stripped.image


def test_crop_of_skull_stripped_inputs_is_found_on_the_raw_ct(tmp_path):
    """The stripped CT has no skull left to find the mask by: the box comes from the raw CT (the same
    box as cropping the raw CT itself), and the stripped voxels are what is cropped."""
    from nnunet_iph.brain.extraction import intracranial_mask

    head = synthetic_head()
    raw, stripped = tmp_path / "raw.nii.gz", tmp_path / "head_0000.nii"
    sitk.WriteImage(head, str(raw))
    sitk.WriteImage(_stripped_copy(head), str(stripped))
    files, crops = crop_cases({"head": [str(stripped)]}, tmp_path / "crops", 10.0, ".nii.gz",
                              mask_from={"head": str(raw)})
    box = crops["head"].box
    assert box == brain_box(intracranial_mask(head).mask, 10.0) and box.voxel_share < 0.9
    got = sitk.ReadImage(files["head"][0])
    assert np.array_equal(sitk.GetArrayViewFromImage(got),
                          sitk.GetArrayViewFromImage(sitk.ReadImage(str(stripped)))[box.slices])
    assert got.GetOrigin() == pytest.approx(head.TransformIndexToPhysicalPoint(box.index), abs=1e-4)
    # a raw CT on another grid cannot crop the model input
    moved = sitk.Image(head)
    moved.SetOrigin(tuple(o + 0.5 for o in head.GetOrigin()))
    sitk.WriteImage(moved, str(tmp_path / "moved.nii.gz"))
    with pytest.raises(ValueError, match="moved.nii.gz: not on the grid of the model input"):
        crop_cases({"head": [str(stripped)]}, tmp_path / "crops3", 10.0, ".nii.gz",
                   mask_from={"head": str(tmp_path / "moved.nii.gz")})


@pytest.mark.slow  # two CLI predictions (~1 min)
def test_cli_skull_stripped_model_with_and_without_brain_crop(geom_dataset, tmp_path):
    """An oracle model whose dataset.json records skull stripping: predict strips each input, and with
    ``--brain-crop`` segments the crop found on the raw CT; both masks are (raw > 0.5) inside the brain
    and background outside, voxel for voxel on the input's own tilted, anisotropic grid."""
    import shutil

    from nnunet_iph.brain.extraction import intracranial_mask
    from nnunet_iph.brain.settings import BrainMaskSettings
    from nnunet_iph.inference.model_inputs import DATASET_KEY, InputSteps

    model = tmp_path / "results" / "nnUNetTrainerOracle__nnUNetPlans_axial__2d"
    shutil.copytree(geom_dataset.results / model.name, model)
    ds = json.loads((model / "dataset.json").read_text(encoding="utf-8"))
    ds[DATASET_KEY] = InputSteps(BrainMaskSettings()).record()
    (model / "dataset.json").write_text(json.dumps(ds), encoding="utf-8")
    head = synthetic_head(seed=3)
    src = tmp_path / "in"
    src.mkdir()
    sitk.WriteImage(head, str(src / "head.nii.gz"))
    brain = sitk.GetArrayFromImage(intracranial_mask(head).mask) > 0
    expected = ((sitk.GetArrayFromImage(head) > 0.5) & brain).astype(np.uint8)
    masks = {}
    for name, extra in (("full", ()), ("crop", ("--brain-crop",))):
        run_cli("nnunet-iph", "predict", "-i", str(src), "-o", str(tmp_path / name), "-m", str(model),
                "--device", "cpu", "--disable-tta", "--no-qc", *extra, env=geom_dataset.env())
        mask = sitk.ReadImage(str(tmp_path / name / "head.nii.gz"))
        assert mask.GetSize() == head.GetSize() and np.allclose(mask.GetOrigin(), head.GetOrigin(), atol=1e-4)
        assert np.allclose(mask.GetDirection(), head.GetDirection(), atol=1e-6)
        masks[name] = sitk.GetArrayFromImage(mask)
    info = json.loads((tmp_path / "crop" / "pipeline.json").read_text(encoding="utf-8"))
    case = info["brain_crop"]["cases"]["head"]
    box = brain_box(intracranial_mask(head).mask, 10.0)
    assert case["cropped"] and (case["index"], case["size"]) == (list(box.index), list(box.size))
    assert info["model_inputs"]["cases"]["head"]["passed_through"] is False
    assert 0.2 < expected[brain].mean() < 0.8
    assert np.array_equal(masks["full"], expected) and np.array_equal(masks["crop"], expected)
