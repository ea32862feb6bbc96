"""Session-wide fixtures: one nnU-Net workdir, one phantom cohort, one preprocessed dataset.

nnU-Net reads ``nnUNet_raw/_preprocessed/_results`` when ``nnunetv2.paths`` is first imported,
so the variables are set in :func:`pytest_configure`, before any test module imports nnunetv2.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from nnunet_iph.environment import nnunet_env

REPO = Path(__file__).resolve().parents[1]
PHYSIONET = REPO.parent / "shared" / "data" / "physionet-ct-ich"
BIN = Path(sys.executable).parent
_WORKDIR: Path | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _WORKDIR
    _WORKDIR = Path(tempfile.mkdtemp(prefix="nnunet_iph_tests_"))
    os.environ.update(nnunet_env(_WORKDIR))
    os.environ.setdefault("nnUNet_n_proc_DA", "2")
    os.environ.setdefault("nnUNet_def_n_proc", "2")
    os.environ.setdefault("nnUNet_compile", "f")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _WORKDIR is not None and not os.environ.get("NNUNET_IPH_KEEP_TEST_DIR"):
        shutil.rmtree(_WORKDIR, ignore_errors=True)


def run_cli(*args: str, timeout: float = 900, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run a console script of this venv; ``check``: on failure show its output in the assertion."""
    cmd = [str(BIN / args[0]), *args[1:]]
    proc = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=timeout,
                          **kwargs)
    if check:
        assert proc.returncode == 0, (f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                                      f"{proc.stderr[-4000:]}")
    return proc


@dataclass(frozen=True)
class PhantomDataset:
    dataset_id: int
    name: str
    raw: Path
    preprocessed: Path
    results: Path

    @property
    def folder_name(self) -> str:
        return f"Dataset{self.dataset_id:03d}_{self.name}"


@pytest.fixture(scope="session")
def nnunet_dirs() -> dict[str, Path]:
    return {k: Path(os.environ[k]) for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}


@pytest.fixture(scope="session")
def physionet_dir() -> Path:
    if not (PHYSIONET / "ct_scans").is_dir():
        pytest.skip(f"real PhysioNet CT-ICH copy not found at {PHYSIONET}")
    return PHYSIONET


@pytest.fixture(scope="session")
def phantom_cohort(tmp_path_factory) -> Path:
    """Manifest of 10 tiny subjects from 3 sites (seed 0)."""
    from nnunet_iph.phantom import PhantomConfig, generate_cohort

    return generate_cohort(tmp_path_factory.mktemp("phantom"),
                           PhantomConfig(n_subjects=10, n_sites=3, size="tiny", seed=0), progress=False)


@pytest.fixture(scope="session")
def phantom_dataset(phantom_cohort, nnunet_dirs) -> PhantomDataset:
    """Dataset501_IPHPhantom: 8 training + 2 test cases, nnU-Net 2d plans, preprocessed."""
    from nnunet_iph.dataset_conversion import convert_multisite, install_splits

    raw = convert_multisite(phantom_cohort, 501, "IPHPhantom", nnunet_dirs["nnUNet_raw"], test_fraction=0.2, seed=0,
                           progress=False)
    run_cli("nnUNetv2_plan_and_preprocess", "-d", "501", "-c", "2d", "-np", "2", "--verify_dataset_integrity")
    install_splits(raw)
    ds = PhantomDataset(501, "IPHPhantom", raw, nnunet_dirs["nnUNet_preprocessed"] / raw.name,
                        nnunet_dirs["nnUNet_results"] / raw.name)
    assert (ds.preprocessed / "nnUNetPlans.json").is_file()
    return ds
