"""Session fixtures of the plane/cascade tests: a 2-fold phantom dataset, plans, tiny trained models.

Dataset560 is converted from the session's phantom cohort with 2 folds (its own split, so the
shared Dataset501 keeps its 5). Every step runs through the real console scripts and is skipped
when its output exists, so the fixtures can be requested in any order.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plane_workflow import (CASCADE_PLANS, COARSE_TRAINER, FINE_TRAINER, MULTI_ID, MULTI_NAME, PLANE_TRAINER, PLANES,
                            MultiDataset, run_cli)


@pytest.fixture(scope="session")
def multi_dataset(phantom_cohort, nnunet_dirs) -> MultiDataset:
    """Phantom -> Dataset560 (2 folds, test hold-out) -> `nnunet-iph plan` (planes + cascade, preprocessed)."""
    from nnunet_iph.dataset_conversion.multisite import convert_multisite

    raw = nnunet_dirs["nnUNet_raw"] / f"Dataset{MULTI_ID}_{MULTI_NAME}"
    if not (raw / "dataset.json").is_file():
        raw = convert_multisite(phantom_cohort, MULTI_ID, MULTI_NAME, nnunet_dirs["nnUNet_raw"], test_fraction=0.2,
                                seed=0, num_folds=2, progress=False)
    ds = MultiDataset(raw, nnunet_dirs["nnUNet_preprocessed"] / raw.name, nnunet_dirs["nnUNet_results"] / raw.name)
    if not (ds.preprocessed / f"{CASCADE_PLANS}.json").is_file():
        run_cli("nnunet-iph", "plan", "-d", str(MULTI_ID), "--coarse-trainer", COARSE_TRAINER,
                "--coarse-arch-kwargs", json.dumps({"width": 0.25}), "-np", "2")
    return ds


@pytest.fixture(scope="session")
def plane_models(multi_dataset) -> dict[str, Path]:
    """One tiny 2D model per plane, both folds, with validation probabilities (--npz)."""
    for plane in PLANES:
        for fold in (0, 1):
            multi_dataset.train("2d", fold, PLANE_TRAINER, f"nnUNetPlans_{plane}", "--npz")
    return {p: multi_dataset.model(PLANE_TRAINER, f"nnUNetPlans_{p}", "2d") for p in PLANES}


@pytest.fixture(scope="session")
def cascade_models(multi_dataset) -> dict[str, Path]:
    """Coarse 2D DenseNet (width 0.25) on all folds (--npz), then the 3D fine stage on fold 0."""
    for fold in (0, 1):
        multi_dataset.train("2d_coarse", fold, COARSE_TRAINER, CASCADE_PLANS, "--npz")
    multi_dataset.train("3d_fine", 0, FINE_TRAINER, CASCADE_PLANS)
    return {"coarse": multi_dataset.model(COARSE_TRAINER, CASCADE_PLANS, "2d_coarse"),
            "fine": multi_dataset.model(FINE_TRAINER, CASCADE_PLANS, "3d_fine")}
