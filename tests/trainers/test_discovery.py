"""One discovery for every trainer list: the package's exports, the Adam variants, the static catalog
(``slurm plan`` on a login node) and ``nnunet-iph trainers`` all give the same names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from nnunet_iph import trainer_catalog
from tests.conftest import run_cli

NEW_MODULE = '''
from nnunet_iph.trainers.focal_dice import nnUNetTrainerFocalDice
from nnunet_iph.trainers.architectures import network_builder
from nnunet_iph.networks import FPN


class nnUNetTrainerToyFPN(nnUNetTrainerFocalDice):
    """A trainer living in a module nobody registered."""

    build_network_architecture = network_builder(FPN, encoder="plain")
'''


def test_static_catalog_matches_the_runtime_discovery():
    trainers = pytest.importorskip("nnunet_iph.trainers")
    static = trainer_catalog.package_trainers()
    assert sorted(static) == sorted(trainers.TRAINERS)
    assert sorted(n for n, i in static.items() if i.generated) == sorted(trainers.ADAM_TRAINERS)
    for name, info in static.items():
        assert info.description, name
        runtime_doc = " ".join((trainers.TRAINERS[name].__doc__ or "").replace("``", "").split())
        assert runtime_doc.startswith(info.description), name


def test_a_trainer_in_a_new_module_gets_its_adam_variant_and_joins_every_list(tmp_path):
    """The package loaded with one more folder on its path (as if the module had been added to it)."""
    (tmp_path / "toy_module.py").write_text(NEW_MODULE, encoding="utf-8")
    code = textwrap.dedent(f"""
        import importlib.util, json, sys
        import nnunet_iph
        from nnunet_iph.trainer_catalog import TRAINERS_DIR
        spec = importlib.util.spec_from_file_location(
            "nnunet_iph.trainers", TRAINERS_DIR / "__init__.py",
            submodule_search_locations=[str(TRAINERS_DIR), {str(tmp_path)!r}])
        module = importlib.util.module_from_spec(spec)
        sys.modules["nnunet_iph.trainers"] = module
        spec.loader.exec_module(module)
        print(json.dumps({{"trainers": sorted(module.TRAINERS), "adam": sorted(module.ADAM_TRAINERS),
                          "schedule": module.nnUNetTrainerToyFPNAdam_1ep_2it.__name__}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8",
                          errors="replace", env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runtime = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"nnUNetTrainerToyFPN", "nnUNetTrainerToyFPNAdam"} <= set(runtime["trainers"])
    assert "nnUNetTrainerToyFPNAdam" in runtime["adam"] and runtime["schedule"] == "nnUNetTrainerToyFPNAdam_1ep_2it"
    static = trainer_catalog.package_trainers((trainer_catalog.TRAINERS_DIR, tmp_path))
    assert sorted(static) == runtime["trainers"]
    assert static["nnUNetTrainerToyFPN"].description == "A trainer living in a module nobody registered."


def test_unknown_trainer_names():
    unknown = trainer_catalog.unknown_trainers([
        "nnUNetTrainerFPN", "nnUNetTrainerFPNAdam", "nnUNetTrainerFPNAdam_2ep_3it_noTTA", "nnUNetTrainer_5ep_2it",
        "nnUNetTrainer_250epochs", "nnUNetTrainerAdam",  # nnU-Net's own
        "nnUNetTrainerFPM", "nnUNetTrainerCascadeFineAdam", "nnUNetTrainerNope_2ep_3it", "nnUNetTrainerFPN_2ep"])
    assert unknown == ["nnUNetTrainerFPM", "nnUNetTrainerCascadeFineAdam", "nnUNetTrainerNope_2ep_3it",
                       "nnUNetTrainerFPN_2ep"]
    assert trainer_catalog.suggest("nnUNetTrainerFPM_2ep_5it") == " (did you mean nnUNetTrainerFPN_2ep_5it?)"


def test_trainers_command_lists_every_name_with_a_description():
    proc = run_cli("nnunet-iph", "trainers")
    lines = proc.stdout.splitlines()
    for name, info in trainer_catalog.package_trainers().items():
        line = next((ln for ln in lines if ln.split() and ln.split()[0] == name), None)
        assert line is not None and info.description[:30] in line, name
    assert "nnUNetTrainerFPNAdam" in proc.stdout and "_<E>ep_<I>it" in proc.stdout and "_noTTA" in proc.stdout
    assert "<Trainer>_fg<NN>" in proc.stdout and "<Trainer>_fg<NN>_<E>ep_<I>it_noTTA" in proc.stdout
