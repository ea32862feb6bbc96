"""Geometry of per-plane models and the 2.5D ensemble, through the real ``nnunet-iph predict``.

No training: the oracle models (see conftest) compute logits from each voxel's own intensity, so
the exported probabilities must equal a known function of the *input image*, voxel for voxel, in
the image's own geometry (anisotropic, non-cubic, permuted + tilted direction, cropped border).
"""

import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from geom_synth import EXPECTED_FORWARD, GAIN, GEOM_ID, run_cli

pytestmark = pytest.mark.slow  # nnU-Net planning + prediction through the CLIs (no training, ~1 min)


def _geometry(img: sitk.Image):
    return (img.GetSize(), tuple(np.round(img.GetSpacing(), 5).tolist()),
            tuple(np.round(img.GetOrigin(), 4).tolist()), tuple(np.round(img.GetDirection(), 5).tolist()))


def _intensity_from_probability(p1: np.ndarray, gain: float) -> np.ndarray:
    """Invert the oracle: p1 = softmax(-z, z)[1] with z = gain (x - 0.5)  =>  x = 0.5 + logit(p1) / (2 gain).

    nnU-Net accumulates sliding-window logits in float16, so x comes back to about 1e-2; a voxel
    taken from a neighbour would be off by ~0.3-1 (noise +-0.3 around a 0/1 target).
    """
    p = np.clip(p1.astype(np.float64), 1e-7, 1 - 1e-7)
    return 0.5 + np.log(p / (1 - p)) / (2.0 * gain)


def test_plane_plans_follow_the_direction_matrix(geom_dataset, nnunet_dirs):
    pre = nnunet_dirs["nnUNet_preprocessed"] / geom_dataset.raw.name
    for plane, forward in EXPECTED_FORWARD.items():
        plans = json.loads((pre / f"nnUNetPlans_{plane}.json").read_text(encoding="utf-8"))
        assert plans["transpose_forward"] == forward, plane
        assert plans["nnunet_iph_plane"]["plane"] == plane
        assert list(plans["configurations"]) == ["2d"]
        assert plans["configurations"]["2d"]["data_identifier"] == f"nnUNetPlans_{plane}_2d"


@pytest.fixture(scope="module")
def planes_prediction(geom_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("geom_pred")
    proc = run_cli("nnunet-iph", "predict", "-i", str(geom_dataset.raw / "imagesTs"), "-o", str(out),
                   "--pipeline", "planes", "-d", str(GEOM_ID), "-tr", "nnUNetTrainerOracle", "--device", "cpu",
                   "--save-probabilities", "--keep-members", env=geom_dataset.env())
    assert "case(s)" in proc.stdout
    return out


def _cases(geom_dataset):
    return sorted(p.name[:-len("_0000.nii.gz")] for p in (geom_dataset.raw / "imagesTs").glob("*.nii.gz"))


def test_each_plane_model_lines_up_voxel_for_voxel(geom_dataset, planes_prediction):
    for case in _cases(geom_dataset):
        image = sitk.ReadImage(str(geom_dataset.raw / "imagesTs" / f"{case}_0000.nii.gz"))
        target = sitk.ReadImage(str(geom_dataset.raw / "labelsTs" / f"{case}.nii.gz"))
        img, tgt = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(target)
        inside = img != 0  # nnU-Net crops the zero border; it gets background probability 1 there
        for plane, gain in GAIN.items():
            member = planes_prediction / "members" / f"nnUNetTrainerOracle__nnUNetPlans_{plane}__2d"
            probs = np.load(member / f"{case}.npz")["probabilities"]
            assert probs.shape == (2, *img.shape), plane
            np.testing.assert_allclose(_intensity_from_probability(probs[1][inside], gain), img[inside],
                                       atol=0.05, err_msg=f"{plane} probabilities misaligned for {case}")
            assert np.all(probs[1][~inside] == 0)
            mask = sitk.ReadImage(str(member / f"{case}.nii.gz"))
            assert _geometry(mask) == _geometry(image), plane
            assert np.array_equal(sitk.GetArrayFromImage(mask), tgt), plane


def test_2p5d_output_is_the_mean_of_the_three_planes(geom_dataset, planes_prediction):
    for case in _cases(geom_dataset):
        members = [np.load(planes_prediction / "members" / f"nnUNetTrainerOracle__nnUNetPlans_{p}__2d" /
                           f"{case}.npz")["probabilities"] for p in GAIN]
        mean = (members[0] + members[1] + members[2]) / np.float32(3)  # float32, in the pipeline's order
        assert not np.allclose(members[0], members[2])  # the planes really differ
        final = np.load(planes_prediction / f"{case}.npz")["probabilities"]
        np.testing.assert_allclose(final, mean, atol=1e-6)
        mask = sitk.ReadImage(str(planes_prediction / f"{case}.nii.gz"))
        image = sitk.ReadImage(str(geom_dataset.raw / "imagesTs" / f"{case}_0000.nii.gz"))
        assert _geometry(mask) == _geometry(image)
        assert np.array_equal(sitk.GetArrayFromImage(mask), mean.argmax(0))


def test_ensemble_of_the_member_folders_gives_the_same_result(geom_dataset, planes_prediction, tmp_path):
    members = [planes_prediction / "members" / f"nnUNetTrainerOracle__nnUNetPlans_{p}__2d" for p in GAIN]
    run_cli("nnunet-iph", "ensemble", "predictions", "-i", *map(str, members), "-o", str(tmp_path),
            "--save-probabilities")
    for case in _cases(geom_dataset):
        assert np.array_equal(np.load(tmp_path / f"{case}.npz")["probabilities"],
                              np.load(planes_prediction / f"{case}.npz")["probabilities"])
        assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / f"{case}.nii.gz"))),
                              sitk.GetArrayFromImage(sitk.ReadImage(str(planes_prediction / f"{case}.nii.gz"))))


def test_volumes_csv_matches_the_known_target(geom_dataset, planes_prediction):
    table = pd.read_csv(planes_prediction / "volumes.csv").set_index("case")
    voxel_ml = float(np.prod([4.0, 0.8, 1.1])) / 1000
    for case in _cases(geom_dataset):
        tgt = sitk.GetArrayFromImage(sitk.ReadImage(str(geom_dataset.raw / "labelsTs" / f"{case}.nii.gz")))
        assert table.loc[case, "n_voxels"] == int(tgt.sum())
        assert table.loc[case, "hemorrhage_ml"] == pytest.approx(tgt.sum() * voxel_ml, abs=1e-3)
    info = json.loads((planes_prediction / "pipeline.json").read_text(encoding="utf-8"))
    assert info["pipeline"] == "planes" and info["timing"]["cases"] == 2


def test_single_model_plain_file_names(geom_dataset, tmp_path):
    """A folder of plain CT names (no _0000) works for one model, output named after the input."""
    src = tmp_path / "in"
    src.mkdir()
    for p in (geom_dataset.raw / "imagesTs").glob("*.nii.gz"):
        (src / p.name.replace("_0000", "")).symlink_to(p)
    out = tmp_path / "out"
    run_cli("nnunet-iph", "predict", "-i", str(src), "-o", str(out), "-d", str(GEOM_ID), "-m",
            "nnUNetTrainerOracle__nnUNetPlans_coronal__2d", "--device", "cpu", "--disable-tta", "--restrict-to-brain",
            "--no-qc", env=geom_dataset.env())  # --restrict-to-brain implies --brain-mask
    for case in _cases(geom_dataset):
        tgt = sitk.GetArrayFromImage(sitk.ReadImage(str(geom_dataset.raw / "labelsTs" / f"{case}.nii.gz")))
        assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}.nii.gz"))), tgt)
        brain = sitk.ReadImage(str(out / "brain" / f"{case}.nii.gz"))  # on the input's grid
        assert brain.GetSize() == sitk.ReadImage(str(src / f"{case}.nii.gz")).GetSize()
    volumes = pd.read_csv(out / "volumes.csv")
    assert set(volumes["case"]) == set(_cases(geom_dataset))
    # the synthetic volume is no head CT: passed through with a warning, so no intracranial volume
    brain_table = pd.read_csv(out / "brain" / "brain_masks.csv")
    assert brain_table["passed_through"].all() and brain_table["warnings"].str.contains("passed through").all()
    assert "intracranial_ml" in volumes and volumes["intracranial_ml"].isna().all()
    assert not (out / "qc").exists()
    info = json.loads((out / "pipeline.json").read_text(encoding="utf-8"))
    assert info["settings"]["restrict_to_brain"] and info["settings"]["brain_mask"]
    restriction = info["brain_restriction"]["cases"]  # passed through: nothing removed, the masks equal the target
    assert set(restriction) == set(_cases(geom_dataset))
    assert all(r["brain_passed_through"] and r["removed_outside_brain"] == 0 for r in restriction.values())
