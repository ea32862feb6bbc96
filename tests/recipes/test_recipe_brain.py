"""``nnunet-iph recipe midl2026`` on a dataset converted with ``--brain-mask``: the CTs are recorded as
skull-stripped (mode ``converted``), with no restriction fallback and no warning."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli
from tests.planning.phantom_subset import subset_manifest

SUBJECTS = ("sub0001", "sub0002", "sub0003")


@pytest.fixture(scope="module")
def stripped(phantom_cohort, nnunet_dirs, tmp_path_factory) -> dict:
    """Dataset585: three phantom subjects converted with --brain-mask (1 CT channel); its dataset.json."""
    manifest = subset_manifest(phantom_cohort, SUBJECTS, tmp_path_factory.mktemp("stripped") / "manifest.csv")
    run_cli("nnunet-iph", "convert", "multisite", str(manifest), "-d", "585", "--name", "RecipeStripped",
            "--folds", "2", "--brain-mask", "--no-progress")
    dataset_json = json.loads((nnunet_dirs["nnUNet_raw"] / "Dataset585_RecipeStripped" / "dataset.json").read_text())
    assert dataset_json["nnunet_iph"]["brain_mask"]  # what the converter recorded
    return dataset_json


def test_dry_run_says_the_cts_are_skull_stripped(stripped, tmp_path):
    proc = run_cli("nnunet-iph", "recipe", "midl2026", "-d", "585", "-o", str(tmp_path / "midl"), "--dry-run")
    assert proc.stderr == ""  # no restriction fallback warning
    assert "# skull (converted): the dataset was converted with --brain-mask: its CTs are skull-stripped" in proc.stdout
    assert "--restrict-to-brain" not in proc.stdout and "choose-postprocessing" not in proc.stdout
    assert not (tmp_path / "midl").exists()


@pytest.mark.slow
def test_recipe_json_records_the_skull_stripping(stripped, tmp_path):
    """The written outputs (needs the plane plans: ~30 s on a busy 2-core machine)."""
    out = tmp_path / "midl"
    proc = run_cli("nnunet-iph", "recipe", "midl2026", "-d", "585", "-o", str(out), "--folds", "0", "1",
                   "--no-preprocess")
    assert "warning" not in proc.stderr
    rec = json.loads((out / "recipe.json").read_text())
    assert rec["brain"]["mode"] == "converted" and "warning" not in rec["brain"]
    assert rec["brain"]["record"] == stripped["nnunet_iph"]["brain_mask"]
    commands = (out / "commands.sh").read_text() + (out / "experiment.toml").read_text()
    assert "--restrict-to-brain" not in commands and "choose-postprocessing" not in commands
    assert "skull-stripped by nnunet-iph's extraction" in (out / "README.md").read_text()
