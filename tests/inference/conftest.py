"""Fixtures of the inference tests: the synthetic geometry dataset with oracle models (geom_synth.py)."""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from geom_synth import GAIN, GEOM_ID, GEOM_NAME, ORACLE_TRAINER, run_cli, write_raw_dataset


@dataclass(frozen=True)
class GeomDataset:
    raw: Path
    results: Path
    oracle_dir: Path

    def env(self) -> dict[str, str]:
        """Subprocess environment: our trainers plus the oracle's folder."""
        return {**os.environ, "nnUNet_extTrainer": str(self.oracle_dir)}


@pytest.fixture(scope="session")
def geom_dataset(nnunet_dirs, tmp_path_factory) -> GeomDataset:
    """Dataset561: plane plans (CLI) + one fake 'trained' oracle model per plane (fold 0)."""
    import torch

    raw = write_raw_dataset(nnunet_dirs["nnUNet_raw"], GEOM_ID, GEOM_NAME)
    run_cli("nnunet-iph", "plan", "-d", str(GEOM_ID), "--planes", "--no-preprocess", "-np", "1")
    oracle_dir = tmp_path_factory.mktemp("oracle_trainer")
    (oracle_dir / "oracle_trainer.py").write_text(textwrap.dedent(ORACLE_TRAINER.format(gain=GAIN)))
    results = nnunet_dirs["nnUNet_results"] / raw.name
    pre = nnunet_dirs["nnUNet_preprocessed"] / raw.name
    for plane in GAIN:
        model = results / f"nnUNetTrainerOracle__nnUNetPlans_{plane}__2d"
        (model / "fold_0").mkdir(parents=True, exist_ok=True)
        (model / "plans.json").write_text((pre / f"nnUNetPlans_{plane}.json").read_text(encoding="utf-8"))
        (model / "dataset.json").write_text((raw / "dataset.json").read_text(encoding="utf-8"))
        torch.save({"network_weights": {}, "trainer_name": "nnUNetTrainerOracle",
                    "init_args": {"configuration": "2d"}, "inference_allowed_mirroring_axes": (0, 1)},
                   model / "fold_0" / "checkpoint_final.pth")
    return GeomDataset(raw, results, oracle_dir)
