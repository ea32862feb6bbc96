"""The recipe table resolved against a dataset: names, plans, tasks and commands (no nnU-Net, fast)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nnunet_iph.recipes.outputs import experiment, recipe_record, to_toml
from nnunet_iph.recipes.resolve import resolve
from nnunet_iph.recipes.table import RECIPES, get_recipe
from nnunet_iph.tomlio import tomllib
from nnunet_iph.trainer_catalog import unknown_trainers

CT = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "hemorrhage": 1}, "file_ending": ".nii.gz"}
ROOT = Path("/data")


def _resolve(name: str, dataset_json: dict = CT, **kw):
    return resolve(get_recipe(name), "Dataset501_X", dataset_json, ROOT / "raw" / "Dataset501_X",
                   ROOT / "pre" / "Dataset501_X", ROOT / "res" / "Dataset501_X", ROOT / "out", **kw)


@pytest.mark.parametrize("name", list(RECIPES))
@pytest.mark.parametrize("schedule", [None, "2ep_5it_noTTA"])
def test_every_trainer_of_every_recipe_exists(name, schedule):
    r = _resolve(name, schedule=schedule)
    assert r.models and unknown_trainers(m.trainer for m in r.models) == []
    assert all(m.trainer.endswith(f"_{schedule}") for m in r.models) if schedule else True


def test_midl2026_grid():
    r = _resolve("midl2026")
    assert [s.identifier for s in r.plans] == [f"nnUNetPlans_midl2026_{p}" for p in ("axial", "coronal", "sagittal")]
    assert [s.source for s in r.plans] == [f"nnUNetPlans_{p}" for p in ("axial", "coronal", "sagittal")]
    trainers = sorted({m.trainer for m in r.models})
    assert trainers == sorted(f"nnUNetTrainer{a}Adam_fg100" for a in ("VGG16UNet", "AttentionUNet", "FPN", "TransUNet"))
    assert len(r.models) == 12 and r.folds == [0, 1, 2, 3, 4]
    rec = recipe_record(r)
    assert len(rec["commands"]["train"]) == 60
    assert rec["brain"]["mode"] == "restrict"
    cv = rec["commands"]["cross_validation"]
    assert ("nnunet-iph ensemble cv -d Dataset501_X --planes -tr nnUNetTrainerFPNAdam_fg100 -p nnUNetPlans_midl2026 "
            "-c 2d -f 0 1 2 3 4 -o /data/out/cv/nnUNetTrainerFPNAdam_fg100__2.5D") in cv
    assert any(c.startswith("nnunet-iph choose-postprocessing /data/pre/Dataset501_X/gt_segmentations "
                            "/data/out/cv/nnUNetTrainerFPNAdam_fg100__2.5D") and "--images /data/raw/Dataset501_X/imagesTr"
               in c for c in cv)


def test_brain_mode_follows_the_conversion_record():
    converted = {**CT, "nnunet_iph": {"brain_mask": {"fill": "minimum"}}}
    r = _resolve("deepbleed", converted)
    assert r.brain["mode"] == "converted" and r.brain["record"] == {"fill": "minimum"}
    assert not any("restrict-to-brain" in c or "choose-postprocessing" in c
                   for c in recipe_record(r)["commands"]["cross_validation"])
    assert _resolve("deepbleed").brain["mode"] == "restrict"
    assert _resolve("physionet2d").brain["mode"] == "none"


def test_deepbleed_and_physionet_and_cascade_plans():
    deep = _resolve("deepbleed")
    assert [(m.trainer, m.plans, m.configuration) for m in deep.models] == [
        ("nnUNetTrainerVNet", "nnUNetPlans", "2d"), ("nnUNetTrainerVNet", "nnUNetPlans", "3d_fullres")]
    assert [(s.identifier, s.configurations) for s in deep.plans] == [("nnUNetPlans", ("2d", "3d_fullres"))]
    phys = _resolve("physionet2d")
    assert {m.plans for m in phys.models} == {"nnUNetPlans_axial"} and len(phys.models) == 4
    cas = _resolve("coarse-fine", schedule="2ep_5it", folds=[0, 1])
    assert cas.coarse_trainer == "nnUNetTrainerDenseNetCoarse_2ep_5it"
    train = recipe_record(cas)["commands"]["train"]
    assert train == [f"nnUNetv2_train Dataset501_X 2d_coarse {f} -tr nnUNetTrainerDenseNetCoarse_2ep_5it "
                     f"-p nnUNetPlans_cascade --npz" for f in (0, 1)] + [
        f"nnUNetv2_train Dataset501_X 3d_fine {f} -tr nnUNetTrainerCascadeFine_2ep_5it -p nnUNetPlans_cascade --npz"
        for f in (0, 1)]


def test_experiment_toml_round_trips():
    r = _resolve("coarse-fine", has_test_images=True)
    exp = experiment(r)
    assert tomllib.loads(to_toml(exp, "header\nline")) == exp
    predict = {p["name"]: p for p in exp["predict"]}
    assert predict["test_fine"]["prev_stage"] == "test_coarse"
    assert [t["after"] for t in exp["train"]] == [[], ["coarse"]]


def test_refusals():
    with pytest.raises(ValueError, match="unknown recipe 'midl'; choose from midl2026, deepbleed, physionet2d, "
                                         "coarse-fine"):
        get_recipe("midl")
    with pytest.raises(ValueError, match="--schedule '2ep'"):
        _resolve("physionet2d", schedule="2ep")
    with pytest.raises(ValueError, match="windows 1 CT channel"):
        _resolve("midl2026", {**CT, "channel_names": {"0": "CT", "1": "CT"}})
