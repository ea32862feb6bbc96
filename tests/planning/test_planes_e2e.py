"""Three plane models -> 2.5D ensemble (cross-validation and new images), through the real CLIs."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch

from plane_workflow import COARSE_TRAINER, MULTI_ID, PLANE_TRAINER, PLANES, run_cli

pytestmark = pytest.mark.slow
D = str(MULTI_ID)


def test_plane_plans_and_preprocessed_data_are_transposed(multi_dataset):
    forward = {"axial": [0, 1, 2], "coronal": [1, 0, 2], "sagittal": [2, 0, 1]}
    shapes = {}
    for plane in PLANES:
        plans = json.loads((multi_dataset.preprocessed / f"nnUNetPlans_{plane}.json").read_text(encoding="utf-8"))
        assert plans["transpose_forward"] == forward[plane]
        assert plans["nnunet_iph_plane"]["plane"] == plane
        case = sorted((multi_dataset.preprocessed / f"nnUNetPlans_{plane}_2d").glob("*.pkl"))[0]
        shapes[plane] = pickle.loads(case.read_bytes())["shape_after_cropping_and_before_resampling"]
    z, y, x = shapes["axial"]
    assert tuple(shapes["coronal"]) == (y, z, x) and tuple(shapes["sagittal"]) == (x, z, y)


def test_cascade_plans_wiring(multi_dataset):
    plans = json.loads((multi_dataset.preprocessed / "nnUNetPlans_cascade.json").read_text(encoding="utf-8"))
    cfg = plans["configurations"]
    assert cfg["2d_coarse"]["next_stage"] == ["3d_fine"] and cfg["2d_coarse"]["inherits_from"] == "2d"
    assert cfg["2d_coarse"]["architecture"]["arch_kwargs"]["width"] == 0.25
    assert cfg["3d_fine"] == {"inherits_from": "3d_fullres", "previous_stage": "2d_coarse",
                              "previous_stage_trainer": COARSE_TRAINER}
    assert (multi_dataset.preprocessed / "nnUNetPlans_3d_fullres").is_dir()  # fine stage preprocessed


def test_ensemble_cross_validation_of_three_planes(plane_models, multi_dataset):
    proc = run_cli("nnunet-iph", "ensemble", "cv", "-d", D, "--planes", "-tr", PLANE_TRAINER, "--compare")
    out = multi_dataset.results / "ensembles" / (
        "ensemble___" + "___".join(f"{PLANE_TRAINER}__nnUNetPlans_{p}__2d" for p in PLANES) + "___0_1")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    n_train = len(list((multi_dataset.raw / "labelsTr").glob("*.nii.gz")))
    assert len(summary["metric_per_case"]) == n_train  # all folds in one folder
    assert json.loads((out / "ensemble.json").read_text(encoding="utf-8"))["folds"] == [0, 1]
    assert "ensemble Dice" in proc.stdout and proc.stdout.count("member ") == 3


def test_predict_planes_is_the_mean_of_the_members(plane_models, multi_dataset, tmp_path):
    out = tmp_path / "pred"
    run_cli("nnunet-iph", "predict", "-i", str(multi_dataset.raw / "imagesTs"), "-o", str(out), "--pipeline",
            "planes", "-d", D, "-tr", PLANE_TRAINER, "-f", "0", "--device", "cpu", "--disable-tta",
            "--keep-members", "--save-probabilities")
    cases = sorted(p.name[:-len("_0000.nii.gz")] for p in (multi_dataset.raw / "imagesTs").glob("*.nii.gz"))
    assert cases
    table = pd.read_csv(out / "volumes.csv").set_index("case")
    for case in cases:
        members = [np.load(out / "members" / f"{PLANE_TRAINER}__nnUNetPlans_{p}__2d" / f"{case}.npz")
                   ["probabilities"] for p in PLANES]
        mean = (members[0] + members[1] + members[2]) / np.float32(3)  # float32, in the pipeline's order
        mask = sitk.ReadImage(str(out / f"{case}.nii.gz"))
        assert np.array_equal(sitk.GetArrayFromImage(mask), mean.argmax(0))
        ml = np.prod(mask.GetSpacing()) / 1000 * np.count_nonzero(sitk.GetArrayFromImage(mask))
        assert table.loc[case, "hemorrhage_ml"] == pytest.approx(ml, abs=1e-3)
    timing = json.loads((out / "pipeline.json").read_text(encoding="utf-8"))["timing"]
    assert 0 <= timing["own_overhead_share"] < 1 and timing["cases"] == len(cases)


# --------------------------------------------------------------------------- failure paths

def _copy_model(src, trainer: str):
    dst = src.parent / f"{trainer}__{src.name.split('__', 1)[1]}"
    if not dst.is_dir():
        shutil.copytree(src, dst)
    return dst


def test_missing_fold_is_named(plane_models):
    proc = run_cli("nnunet-iph", "ensemble", "cv", "-d", D, "--planes", "-tr", PLANE_TRAINER, "-f", "0", "1", "2",
                   check=False)
    assert proc.returncode == 2
    assert "fold 2" in proc.stderr and "nnUNetv2_train" in proc.stderr


def test_missing_npz_asks_for_validation_with_npz(plane_models):
    copy = _copy_model(plane_models["coronal"], "nnUNetTrainerNoNpz")
    for f in (copy / "fold_1" / "validation").glob("*.npz"):
        f.unlink()
    proc = run_cli("nnunet-iph", "ensemble", "cv", "-d", D, "-m", plane_models["axial"].name, copy.name, check=False)
    assert proc.returncode == 2 and "--val --npz" in proc.stderr and "fold_1" in proc.stderr


def test_missing_plane_is_refused(plane_models, tmp_path):
    _copy_model(plane_models["axial"], "nnUNetTrainerTwoPlanes")
    _copy_model(plane_models["coronal"], "nnUNetTrainerTwoPlanes")
    proc = run_cli("nnunet-iph", "ensemble", "cv", "-d", D, "--planes", "-tr", "nnUNetTrainerTwoPlanes", check=False)
    assert proc.returncode == 2 and "nnUNetTrainerTwoPlanes__nnUNetPlans_sagittal__2d" in proc.stderr
    proc = run_cli("nnunet-iph", "predict", "-i", str(tmp_path), "-o", str(tmp_path / "o"), "--pipeline", "planes",
                   "-d", D, "-m", plane_models["axial"].name, plane_models["coronal"].name, check=False)
    assert proc.returncode == 2 and "missing plane(s) ['sagittal']" in proc.stderr


def test_mismatched_plans_are_refused(plane_models):
    twin = _copy_model(plane_models["coronal"], "nnUNetTrainerTwin")
    proc = run_cli("nnunet-iph", "ensemble", "cv", "-d", D, "--planes", "-m", plane_models["axial"].name,
                   plane_models["coronal"].name, twin.name, check=False)
    assert proc.returncode == 2 and "both slice along the coronal plane" in proc.stderr

    other = _copy_model(plane_models["sagittal"], "nnUNetTrainerOtherLabels")
    ds = json.loads((other / "dataset.json").read_text(encoding="utf-8"))
    ds["labels"] = {"background": 0, "iph": 1, "ivh": 2}
    (other / "dataset.json").write_text(json.dumps(ds))
    proc = run_cli("nnunet-iph", "ensemble", "cv", "-d", D, "-m", plane_models["axial"].name, other.name,
                   check=False)
    assert proc.returncode == 2 and "mismatched plans" in proc.stderr and "labels" in proc.stderr


def test_plane_plans_work_for_our_architectures(multi_dataset):
    """Every architecture trainer builds its network from a coronal / sagittal plan (anisotropic 2D patch)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    import nnunet_iph.trainers as trainers

    archs = {n: t for n, t in trainers.TRAINERS.items()
             if hasattr(t.build_network_architecture, "network_class") and not n.endswith("Adam")}
    assert "nnUNetTrainerDenseNetCoarse" in archs
    for plane in ("coronal", "sagittal"):
        pm = PlansManager(str(multi_dataset.preprocessed / f"nnUNetPlans_{plane}.json"))
        cm = pm.get_configuration("2d")
        x = torch.zeros(1, 1, *cm.patch_size)
        for name, trainer in archs.items():
            net = trainer.build_network_architecture(pm, cm, 1, 2, False).eval()
            with torch.no_grad():
                assert net(x).shape == (1, 2, *cm.patch_size), (plane, name)
