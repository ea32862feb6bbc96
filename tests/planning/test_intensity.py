"""Intensity protocols: window values through nnU-Net's own CTNormalization, variant plans, refusals.

Pure data (plans dicts, a raw dataset.json, plans files): no preprocessing, no training.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from nnunet_iph.cli import main
from nnunet_iph.planning.intensity import (INTENSITY_KEY, PROTOCOLS, get_protocol, plans_protocol, variant_plans_name,
                                           with_intensity_protocol, write_intensity_plans)

DATASET = "Dataset571_IntensityPlans"


def _plans(name: str = "nnUNetPlans_axial", n_channels: int = 1) -> dict:
    """A minimal nnU-Net plans dict: 2d, 3d_fullres, and a cascade-style config inheriting 3d_fullres."""
    cfg = {"preprocessor_name": "DefaultPreprocessor", "normalization_schemes": ["CTNormalization"] * n_channels,
           "use_mask_for_norm": [False] * n_channels, "spacing": [1.0, 1.0, 1.0], "patch_size": [16, 16, 16],
           "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                            "arch_kwargs": {}, "_kw_requires_import": []}}
    plans = {"dataset_name": DATASET, "plans_name": name, "transpose_forward": [0, 1, 2],
             "transpose_backward": [0, 1, 2], "image_reader_writer": "SimpleITKIO",
             "configurations": {"2d": {**cfg, "data_identifier": f"{name}_2d", "patch_size": [16, 16]},
                                "3d_fullres": {**cfg, "data_identifier": f"{name}_3d_fullres"},
                                "3d_fine": {"inherits_from": "3d_fullres", "previous_stage": "2d"}},
             "foreground_intensity_properties_per_channel": {
                 str(c): {"mean": 40.0, "std": 20.0, "percentile_00_5": -5.0, "percentile_99_5": 90.0}
                 for c in range(n_channels)}}
    if name.endswith("_axial"):
        plans["nnunet_iph_plane"] = {"plane": "axial"}
    return plans


def _ct(n: int = 1) -> dict[str, str]:
    return {str(c): "CT" for c in range(n)}


def _normalize(plans: dict, image: np.ndarray, configuration: str = "2d") -> np.ndarray:
    """nnU-Net's own normalisation step of preprocessing (the class looked up by the plans' scheme name)."""
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(plans)
    return DefaultPreprocessor(verbose=False)._normalize(
        image.astype(np.float32), np.zeros((1, *image.shape[1:]), np.int8), pm.get_configuration(configuration),
        pm.foreground_intensity_properties_per_channel)


# --------------------------------------------------------------------------- window values

def test_midl2026_is_the_window_minus30_100_mapped_to_0_1():
    hu = np.array([[-1024.0, -30.0, -29.5, 0.0, 35.0, 100.0, 100.5, 1500.0]])
    out = _normalize(with_intensity_protocol(_plans(), "midl2026", _ct()), hu)
    # (clip(x, -30, 100) + 30) / 130, by hand
    assert out.dtype == np.float32
    assert out[0].tolist() == pytest.approx([0.0, 0.0, 0.5 / 130, 30 / 130, 0.5, 1.0, 1.0, 1.0], abs=1e-7)
    assert out[0, 4] == 0.5 and out[0, 0] == 0.0 and out[0, -1] == 1.0


def test_blastct_is_the_window_minus15_100():
    hu = np.array([[-40.0, -15.0, 42.5, 100.0, 200.0]])
    out = _normalize(with_intensity_protocol(_plans(), "blastct", _ct()), hu)
    assert out[0].tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]


def test_multiwindow_gives_each_channel_its_window():
    hu = np.array([-1000.0, -20.0, 40.0, 80.0, 600.0, 3000.0])
    out = _normalize(with_intensity_protocol(_plans(n_channels=3), "multiwindow", _ct(3)), np.stack([hu] * 3))
    assert out[0].tolist() == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0, 1.0])  # brain [0, 80]
    assert out[1].tolist() == pytest.approx([0.0, 0.0, 0.3, 0.5, 1.0, 1.0])  # subdural [-20, 180]
    assert out[2].tolist() == pytest.approx([0.0, 780 / 2800, 840 / 2800, 880 / 2800, 0.5, 1.0])  # bone


def test_inherited_configuration_normalises_the_same():
    variant = with_intensity_protocol(_plans(), "midl2026", _ct())
    hu = np.array([[[-100.0, 35.0, 300.0]]])
    assert _normalize(variant, hu, "3d_fine").ravel().tolist() == [0.0, 0.5, 1.0]


# --------------------------------------------------------------------------- variant plans

@pytest.mark.parametrize("source, plane, expected", [
    ("nnUNetPlans_axial", "axial", "nnUNetPlans_midl2026_axial"),
    ("MyPlans_coronal", "coronal", "MyPlans_midl2026_coronal"),
    ("nnUNetPlans", None, "nnUNetPlans_midl2026"),
    ("nnUNetPlans_cascade", None, "nnUNetPlans_cascade_midl2026"),
])
def test_variant_names_keep_the_plane_last(source, plane, expected):
    assert variant_plans_name(source, "midl2026", plane) == expected


def test_every_data_identifier_is_renamed_and_the_source_is_untouched():
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    source = _plans("nnUNetPlans_cascade")
    before = json.dumps(source, sort_keys=True)
    variant = with_intensity_protocol(source, "blastct", _ct())
    assert json.dumps(source, sort_keys=True) == before
    assert variant["plans_name"] == "nnUNetPlans_cascade_blastct"
    pm, old = PlansManager(variant), PlansManager(source)
    ids = {c: pm.get_configuration(c).data_identifier for c in pm.available_configurations}
    assert ids == {"2d": "nnUNetPlans_cascade_blastct_2d", "3d_fullres": "nnUNetPlans_cascade_blastct_3d_fullres",
                   "3d_fine": "nnUNetPlans_cascade_blastct_3d_fullres"}  # inherited
    assert not set(ids.values()) & {old.get_configuration(c).data_identifier for c in old.available_configurations}
    assert variant["configurations"]["3d_fine"] == source["configurations"]["3d_fine"]
    assert plans_protocol(variant) == "blastct" and plans_protocol(source) == "nnunet"
    assert variant[INTENSITY_KEY]["derived_from"] == "nnUNetPlans_cascade"
    assert variant[INTENSITY_KEY]["windows"] == [["blastct", -15, 100]]


def test_plane_plans_variant_keeps_the_plane():
    from nnunet_iph.planning.planes import plans_plane

    variant = with_intensity_protocol(_plans("nnUNetPlans_axial"), "midl2026", _ct())
    assert variant["plans_name"] == "nnUNetPlans_midl2026_axial" and plans_plane(variant) == "axial"
    assert variant["configurations"]["2d"]["data_identifier"] == "nnUNetPlans_midl2026_axial_2d"


# --------------------------------------------------------------------------- refusals

def test_non_ct_channel_is_refused():
    with pytest.raises(ValueError, match=r"windows CT channels.*'MRI'"):
        with_intensity_protocol(_plans(), "midl2026", {"0": "MRI"})


def test_multiwindow_on_one_channel_names_ct_channels():
    with pytest.raises(ValueError, match=r"needs 3 CT channel\(s\).*has 1.*--ct-channels 3"):
        with_intensity_protocol(_plans(), "multiwindow", _ct(1))
    with pytest.raises(ValueError, match=r"needs 1 CT channel.*has 3.*--ct-channels 1"):
        with_intensity_protocol(_plans(n_channels=3), "midl2026", _ct(3))


def test_rederiving_from_a_variant_is_refused():
    variant = with_intensity_protocol(_plans(), "midl2026", _ct())
    with pytest.raises(ValueError, match=r"already use intensity protocol 'midl2026': derive from the original"):
        with_intensity_protocol(variant, "blastct", _ct())


def test_default_and_unknown_protocols_are_refused():
    with pytest.raises(ValueError, match="nnU-Net's own normalisation"):
        with_intensity_protocol(_plans(), "nnunet", _ct())
    with pytest.raises(ValueError, match=r"unknown intensity protocol 'midl'.*blastct"):
        get_protocol("midl")
    assert set(PROTOCOLS) == {"nnunet", "midl2026", "blastct", "multiwindow"}


# --------------------------------------------------------------------------- plans files and the CLI

@pytest.fixture
def plans_dataset(nnunet_dirs) -> Path:
    """Raw dataset.json + nnUNetPlans.json (nothing preprocessed); rewritten for every test."""
    raw = nnunet_dirs["nnUNet_raw"] / DATASET
    (raw / "imagesTr").mkdir(parents=True, exist_ok=True)
    (raw / "labelsTr").mkdir(parents=True, exist_ok=True)
    (raw / "dataset.json").write_text(json.dumps({"channel_names": _ct(), "labels": {"background": 0, "iph": 1},
                                                  "numTraining": 0, "file_ending": ".nii.gz"}))
    pre = nnunet_dirs["nnUNet_preprocessed"] / DATASET
    pre.mkdir(parents=True, exist_ok=True)
    for f in pre.glob("*.json"):
        f.unlink()
    (pre / "nnUNetPlans.json").write_text(json.dumps(_plans("nnUNetPlans")))
    return pre


def test_write_intensity_plans_is_idempotent_and_refuses_other_content(plans_dataset):
    path = write_intensity_plans(DATASET, "nnUNetPlans", "midl2026")
    assert path == plans_dataset / "nnUNetPlans_midl2026.json"
    written = json.loads(path.read_text(encoding="utf-8"))
    assert written["configurations"]["2d"]["data_identifier"] == "nnUNetPlans_midl2026_2d"
    mtime = os.stat(path).st_mtime_ns
    assert write_intensity_plans(DATASET, "nnUNetPlans", "midl2026") == path
    assert os.stat(path).st_mtime_ns == mtime  # identical: not rewritten

    source = _plans("nnUNetPlans")
    source["configurations"]["2d"]["spacing"] = [2.0, 2.0]  # re-planned source
    (plans_dataset / "nnUNetPlans.json").write_text(json.dumps(source))
    with pytest.raises(ValueError, match=r"nnUNetPlans_midl2026\.json: exists with content other than.*"
                                         r"--overwrite-intensity-plans"):
        write_intensity_plans(DATASET, "nnUNetPlans", "midl2026")
    assert json.loads(path.read_text(encoding="utf-8")) == written  # untouched
    write_intensity_plans(DATASET, "nnUNetPlans", "midl2026", overwrite=True)
    assert json.loads(path.read_text(encoding="utf-8"))["configurations"]["2d"]["spacing"] == [2.0, 2.0]


def test_write_intensity_plans_names_the_file_it_refuses(plans_dataset, nnunet_dirs):
    with pytest.raises(ValueError, match=rf"{DATASET}/dataset\.json: .*--ct-channels 3"):
        write_intensity_plans(DATASET, "nnUNetPlans", "multiwindow")
    path = write_intensity_plans(DATASET, "nnUNetPlans", "blastct")
    with pytest.raises(ValueError, match=rf"{path.name}: plans 'nnUNetPlans_blastct' already use"):
        write_intensity_plans(DATASET, path.stem, "midl2026")
    with pytest.raises(FileNotFoundError, match="plans 'nnUNetPlans_missing' not found"):
        write_intensity_plans(DATASET, "nnUNetPlans_missing", "midl2026")


def test_plan_cli_derives_from_existing_plans(plans_dataset, capsys):
    assert main(["plan", "-d", DATASET, "--intensity", "midl2026", "--from-plans", "nnUNetPlans",
                 "--no-preprocess"]) == 0
    assert "train with: -p nnUNetPlans_midl2026" in capsys.readouterr().out
    assert (plans_dataset / "nnUNetPlans_midl2026.json").is_file()


@pytest.mark.parametrize("argv, message", [
    (["--intensity", "multiwindow", "--from-plans", "nnUNetPlans"], "--ct-channels 3"),
    (["--from-plans", "nnUNetPlans"], "--from-plans derives intensity variants only"),
    (["--intensity", "midl2026", "--from-plans", "nnUNetPlans", "--planes"], "neither --planes nor --cascade"),
    (["--intensity", "midl2026", "-c", "2d"], "-c/--configurations goes with --from-plans"),
    (["--intensity", "midl2026", "--from-plans", "nnUNetPlans"], "no configuration of it is preprocessed yet"),
])
def test_plan_cli_refusals(plans_dataset, capsys, argv, message):
    assert main(["plan", "-d", DATASET, *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (plans_dataset / "nnUNetPlans_multiwindow.json").exists()
