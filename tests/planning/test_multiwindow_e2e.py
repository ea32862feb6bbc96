"""The multi-window path on the phantom, through the real CLIs: ``convert --ct-channels 3`` -> ``plan
--planes axial --intensity multiwindow`` (2d) -> preprocessed channels = the brain / subdural / bone
windows of the one CT; ``prepare-inputs`` and ``predict`` give the network exactly the training array."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_iph.planning.intensity import get_protocol
from tests.conftest import run_cli
from tests.network_recorder import record_network_inputs
from tests.planning.phantom_subset import subset_manifest

SUBJECTS = ("sub0001", "sub0002", "sub0003")
PLANS = "nnUNetPlans_multiwindow_axial"
WINDOWS = [(w.lower, w.upper) for w in get_protocol("multiwindow").windows]


@pytest.fixture(scope="module")
def multiwindow(phantom_cohort, nnunet_dirs, tmp_path_factory):
    """Dataset586 (three subjects, 3 CT channels), its multiwindow axial plans preprocessed; the subjects'
    original CTs under plain names (what a user predicts on)."""
    root = tmp_path_factory.mktemp("multiwindow")
    manifest = subset_manifest(phantom_cohort, SUBJECTS, root / "manifest.csv")
    run_cli("nnunet-iph", "convert", "multisite", str(manifest), "-d", "586", "--name", "MultiWindow",
            "--folds", "2", "--ct-channels", "3", "--no-progress")
    proc = run_cli("nnunet-iph", "plan", "-d", "586", "--planes", "axial", "--intensity", "multiwindow", "-np", "2")
    assert f"train with: -p {PLANS};" in proc.stdout
    ct = root / "ct"
    ct.mkdir()
    for case in SUBJECTS:
        shutil.copyfile(phantom_cohort.parent / "images" / f"{case}.nii.gz", ct / f"{case}.nii.gz")
    name = "Dataset586_MultiWindow"
    return nnunet_dirs["nnUNet_raw"] / name, nnunet_dirs["nnUNet_preprocessed"] / name, ct


def _plans(pre: Path) -> dict:
    return json.loads((pre / f"{PLANS}.json").read_text(encoding="utf-8"))


def _training_arrays(pre: Path) -> dict[str, tuple[np.ndarray, dict]]:
    """Each case as nnUNetv2_train loads it: (data, properties)."""
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    folder = pre / f"{PLANS}_2d"
    dataset = infer_dataset_class(str(folder))(str(folder))
    out = {}
    for case in SUBJECTS:
        data, _, _, props = dataset.load_case(case)
        out[case] = (np.asarray(data[:]), props)
    return out


def _model_folder(raw: Path, pre: Path, where: Path) -> Path:
    """A model folder of the variant plans (its checkpoint is never loaded: see ``fake_init``)."""
    folder = where / f"nnUNetTrainer__{PLANS}__2d"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"")
    shutil.copyfile(pre / f"{PLANS}.json", folder / "plans.json")
    shutil.copyfile(raw / "dataset.json", folder / "dataset.json")
    return folder


def _predictor_input(plans: dict, dataset_json: dict, files: list[Path]) -> np.ndarray:
    """What nnUNetv2_predict hands the network for these channel files (the plans' 2d preprocessor)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(plans)
    cm = pm.get_configuration("2d")
    return cm.preprocessor_class(verbose=False).run_case([str(f) for f in files], None, pm, cm, dataset_json)[0]


@pytest.mark.slow
def test_preprocessed_channels_are_the_three_windows_of_the_ct(multiwindow, phantom_cohort):
    """Channel k of every training case = the hand-computed window k of the subject's original HU,
    resampled by the configuration's own function where nnU-Net resampled (after normalising, as it does)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    raw, pre, _ = multiwindow
    plans = _plans(pre)
    assert plans["configurations"]["2d"]["normalization_schemes"] == ["CTNormalization"] * 3
    cm = PlansManager(plans).get_configuration("2d")
    forward = plans["transpose_forward"]
    resampled = 0
    for case, (train, props) in _training_arrays(pre).items():
        hu = sitk.GetArrayFromImage(sitk.ReadImage(str(phantom_cohort.parent / "images" / f"{case}.nii.gz")))
        assert hu.min() < -800 and hu.max() > 180  # the phantom reaches both ends of every window but bone's top
        hu = hu.transpose(forward)[tuple(slice(a, b) for a, b in props["bbox_used_for_cropping"])].astype(np.float32)
        windows = np.stack([(np.clip(hu, lo, hi) - np.float32(lo)) / np.float32(hi - lo) for lo, hi in WINDOWS])
        assert train.shape[0] == 3 and train.dtype == np.float32
        if train.shape[1:] != windows.shape[1:]:
            spacing = [props["spacing"][i] for i in forward]
            windows = cm.resampling_fn_data(windows, train.shape[1:], spacing, [spacing[0], *cm.spacing])
            resampled += 1
        else:
            assert [(c.min(), c.max()) for c in train[:2]] == [(0.0, 1.0), (0.0, 1.0)]
        assert np.array_equal(train, windows), case
        assert not np.array_equal(train[0], train[1]) and not np.array_equal(train[1], train[2])
    print(f"{len(SUBJECTS)} cases, {resampled} resampled")


@pytest.mark.slow
def test_prepare_inputs_and_predict_give_the_network_the_training_array(multiwindow, tmp_path, monkeypatch):
    from nnunet_iph.cli import main

    raw, pre, ct = multiwindow
    model = _model_folder(raw, pre, tmp_path / "models")
    training = _training_arrays(pre)

    # prepare-inputs: the three channel files of each case, then what nnUNetv2_predict makes of them
    prepared = tmp_path / "prepared"
    run_cli("nnunet-iph", "prepare-inputs", str(ct), str(prepared), "-m", str(model))
    dataset_json = json.loads((raw / "dataset.json").read_text(encoding="utf-8"))
    for case, (train, _) in training.items():
        files = [prepared / f"{case}_{k:04d}.nii.gz" for k in range(3)]
        assert np.array_equal(_predictor_input(_plans(pre), dataset_json, files), train), case
    # the check can fail: the source plans (nnU-Net's own normalisation) give the same files another array
    source = json.loads((pre / "nnUNetPlans_axial.json").read_text(encoding="utf-8"))
    assert not np.array_equal(_predictor_input(source, dataset_json, files), train)

    # nnunet-iph predict on the plain CTs, in-process, its network replaced by a recorder
    seen = record_network_inputs(monkeypatch)
    assert main(["predict", "-i", str(ct), "-o", str(tmp_path / "out"), "-m", str(model), "-f", "0",
                 "--device", "cpu", "--disable-tta", "--no-qc"]) == 0
    assert len(seen) == len(SUBJECTS)
    for (case, (train, _)), got in zip(training.items(), seen):
        assert got.shape == train.shape and got.dtype == train.dtype
        assert np.array_equal(got, train), case  # bit for bit


def test_multiwindow_on_a_one_channel_dataset_is_refused(phantom_dataset):
    proc = run_cli("nnunet-iph", "plan", "-d", "501", "--planes", "axial", "--intensity", "multiwindow",
                   check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert proc.stderr.startswith(f"nnunet-iph plan: error: {phantom_dataset.raw / 'dataset.json'}: intensity "
                                  "protocol 'multiwindow' needs 3 CT channel(s)")
    assert proc.stderr.rstrip().endswith("convert the dataset with --ct-channels 3")
    assert not list(phantom_dataset.preprocessed.glob("*multiwindow*"))
