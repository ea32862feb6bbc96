"""Helpers of the plane/cascade tests (fixtures in conftest.py): names, CLI runner, dataset handle.

Dataset560 is converted from the session's phantom cohort with 2 folds (its own split, so the
shared Dataset501 keeps its 5). Every step runs through the real console scripts and is skipped
when its output exists, so the fixtures can be requested in any order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from nnunet_iph.planning import PLANES  # noqa: F401  (re-exported to the tests)
from tests import conftest

MULTI_ID, MULTI_NAME = 560, "IPHPhantomMulti"
# test-only subclasses of the real trainers (1 epoch x 2 iterations, no validation mirroring): see
# ext_trainers/iph_cascade_test_trainers.py
PLANE_TRAINER = "nnUNetTrainerTestPlane"
COARSE_TRAINER = "nnUNetTrainerTestCoarse"
FINE_TRAINER = "nnUNetTrainerTestFine"
FINE_PROB_TRAINER = "nnUNetTrainerTestFineProb"
EXT_TRAINERS = Path(__file__).resolve().parent / "ext_trainers"
CASCADE_PLANS = "nnUNetPlans_cascade"


def test_env(extra: dict | None = None) -> dict[str, str]:
    """The session environment plus the test trainers' folder in nnUNet_extTrainer."""
    env = {**os.environ, **(extra or {})}
    env["nnUNet_extTrainer"] = os.pathsep.join(p for p in (env.get("nnUNet_extTrainer"), str(EXT_TRAINERS)) if p)
    return env


def run_cli(*args: str, check: bool = True, env: dict | None = None, timeout: float = 1800):
    """A console script of this venv with the test trainers findable (see tests.conftest.run_cli)."""
    return conftest.run_cli(*args, check=check, env=test_env(env), timeout=timeout)


@dataclass(frozen=True)
class MultiDataset:
    raw: Path
    preprocessed: Path
    results: Path

    @property
    def name(self) -> str:
        return self.raw.name

    def model(self, trainer: str, plans: str, configuration: str) -> Path:
        return self.results / f"{trainer}__{plans}__{configuration}"

    def train(self, configuration: str, fold: int, trainer: str, plans: str, *extra: str, env=None) -> Path:
        """``nnUNetv2_train`` unless the fold's final checkpoint exists."""
        folder = self.model(trainer, plans, configuration) / f"fold_{fold}"
        if not (folder / "checkpoint_final.pth").is_file():
            run_cli("nnUNetv2_train", str(MULTI_ID), configuration, str(fold), "-tr", trainer, "-p", plans,
                    "-device", "cpu", *extra, env=env)
        return folder
