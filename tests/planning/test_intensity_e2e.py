"""Hard requirement of the intensity protocols: a CT reaches the network exactly as in training.

On the phantom (Dataset501, nnUNetPlans 2d preprocessed by the session fixture): `nnunet-iph plan
--intensity midl2026 --from-plans nnUNetPlans` preprocesses the variant; a case's training array (as
nnUNetv2_train loads it) must equal, bit for bit, nnU-Net's predictor preprocessing of the raw file
(what nnUNetv2_predict runs) and the array handed to the network inside `nnunet-iph predict`.
"""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from tests.conftest import run_cli

pytestmark = pytest.mark.slow
PLANS = "nnUNetPlans_midl2026"
LOWER, UPPER = -30.0, 100.0


@pytest.fixture(scope="module")
def midl_plans(phantom_dataset):
    proc = run_cli("nnunet-iph", "plan", "-d", str(phantom_dataset.dataset_id), "--intensity", "midl2026",
                   "--from-plans", "nnUNetPlans", "-np", "2")
    assert f"train with: -p {PLANS}" in proc.stdout
    return json.loads((phantom_dataset.preprocessed / f"{PLANS}.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def model_folder(phantom_dataset, midl_plans, tmp_path_factory):
    """An untrained (random weights) 2d model of the variant plans, saved as nnUNetv2_train saves one."""
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    folder = tmp_path_factory.mktemp("models") / f"nnUNetTrainer__{PLANS}__2d"
    (folder / "fold_0").mkdir(parents=True)
    shutil.copy(phantom_dataset.preprocessed / f"{PLANS}.json", folder / "plans.json")
    shutil.copy(phantom_dataset.raw / "dataset.json", folder / "dataset.json")
    pm = PlansManager(midl_plans)
    ds = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    net = nnUNetTrainer.build_network_architecture(pm, pm.get_configuration("2d"), 1,
                                                   pm.get_label_manager(ds).num_segmentation_heads, False)
    torch.save({"network_weights": net.state_dict(), "trainer_name": "nnUNetTrainer",
                "init_args": {"configuration": "2d"}, "inference_allowed_mirroring_axes": (0, 1)},
               folder / "fold_0" / "checkpoint_final.pth")
    return folder


def _training_array(phantom_dataset, midl_plans, case: str) -> tuple[np.ndarray, dict]:
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    folder = phantom_dataset.preprocessed / midl_plans["configurations"]["2d"]["data_identifier"]
    data, _, _, props = infer_dataset_class(str(folder))(str(folder), identifiers=[case]).load_case(case)
    return np.asarray(data[:]), props


def test_training_predictor_and_nnunet_iph_predict_see_the_same_array(phantom_dataset, midl_plans, model_folder,
                                                                      tmp_path, monkeypatch):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_iph.cli import main

    assert midl_plans["configurations"]["2d"]["data_identifier"] == f"{PLANS}_2d"
    case = sorted(p.name[:-len("_0000.nii.gz")] for p in (phantom_dataset.raw / "imagesTr").glob("*_0000.nii.gz"))[0]
    raw_file = phantom_dataset.raw / "imagesTr" / f"{case}_0000.nii.gz"
    train, _ = _training_array(phantom_dataset, midl_plans, case)

    # what nnUNetv2_predict runs: the model's plans, the configuration's preprocessor, the raw file
    pm = PlansManager(json.loads((model_folder / "plans.json").read_text(encoding="utf-8")))
    cm = pm.get_configuration("2d")
    ds = json.loads((model_folder / "dataset.json").read_text(encoding="utf-8"))
    predicted, _, _ = cm.preprocessor_class(verbose=False).run_case([str(raw_file)], None, pm, cm, ds)
    assert predicted.dtype == train.dtype == np.float32
    assert np.array_equal(predicted, train)

    # what reaches the network inside nnunet-iph predict
    seen = []
    original = nnUNetPredictor.predict_sliding_window_return_logits

    def capture(self, data):
        seen.append(data.detach().cpu().numpy().copy())
        return original(self, data)

    monkeypatch.setattr(nnUNetPredictor, "predict_sliding_window_return_logits", capture)
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(raw_file, inputs / raw_file.name)
    assert main(["predict", "-i", str(inputs), "-o", str(tmp_path / "out"), "-m", str(model_folder), "-f", "0",
                 "--device", "cpu", "--disable-tta", "--no-qc"]) == 0
    assert len(seen) == 1 and np.array_equal(seen[0], train)


def test_training_arrays_are_the_window_of_the_raw_hu(phantom_dataset, midl_plans):
    """Every case: the hand-computed window (clip(HU, -30, 100) + 30) / 130 of the raw HU, resampled by
    the configuration's own function where nnU-Net resampled (after normalising, as it does)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    cm = PlansManager(midl_plans).get_configuration("2d")
    forward = midl_plans["transpose_forward"]
    cases = sorted(p.name[:-len(".pkl")] for p in (phantom_dataset.preprocessed / f"{PLANS}_2d").glob("*.pkl"))
    assert cases
    resampled = 0
    for case in cases:
        train, props = _training_array(phantom_dataset, midl_plans, case)
        hu = sitk.GetArrayFromImage(sitk.ReadImage(str(phantom_dataset.raw / "imagesTr" / f"{case}_0000.nii.gz")))
        assert hu.min() < LOWER and hu.max() > UPPER  # the phantom spans the window: both ends are reached
        hu = hu.transpose(forward)[tuple(slice(a, b) for a, b in props["bbox_used_for_cropping"])]
        window = (np.clip(hu.astype(np.float32), LOWER, UPPER) - np.float32(LOWER)) / np.float32(UPPER - LOWER)
        if train.shape[1:] != window.shape:
            spacing = [props["spacing"][i] for i in forward]
            window = cm.resampling_fn_data(window[None], train.shape[1:], spacing, [spacing[0], *cm.spacing])[0]
            resampled += 1
        else:
            assert train.min() == 0.0 and train.max() == 1.0
        assert np.array_equal(train[0], window), case
    print(f"{len(cases)} cases, {resampled} resampled")


def test_plan_cli_writes_the_variants_of_plane_and_cascade_plans(phantom_dataset, midl_plans):
    proc = run_cli("nnunet-iph", "plan", "-d", str(phantom_dataset.dataset_id), "--intensity", "blastct", "--planes",
                   "axial", "--cascade", "--plans-prefix", "IntensityTest", "--cascade-plans", "IntensityTestCascade",
                   "--no-preprocess", "-np", "2")
    assert "train with: -p IntensityTest_blastct_axial; 2.5D:" in proc.stdout
    assert "--pipeline planes -p IntensityTest_blastct\n" in proc.stdout
    assert "-p IntensityTestCascade_blastct" in proc.stdout
    for name, source in (("IntensityTest_blastct_axial", "IntensityTest_axial"),
                         ("IntensityTestCascade_blastct", "IntensityTestCascade")):
        plans = json.loads((phantom_dataset.preprocessed / f"{name}.json").read_text(encoding="utf-8"))
        assert plans["nnunet_iph_intensity"]["derived_from"] == source
        assert all(c["data_identifier"].startswith(f"{name}_") for c in plans["configurations"].values()
                   if "data_identifier" in c)
    assert (phantom_dataset.preprocessed / "IntensityTest_axial.json").is_file()  # the source plans, as before
