"""Seeded CPU training repeats bit for bit (the CT-ICH CPU protocol's reproducibility claim).

Two runs of the real ``nnUNetv2_train`` entry point (through the benchmark's thread-capping wrapper)
with ``NNUNET_IPH_SEED`` and augmentation in the training process, on two torch threads as the
protocol uses them, must give identical weights and identical validation Dice; another seed must not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

TRAINER = "nnUNetTrainer_1ep_4it_noTTA"


def train(phantom_dataset, results: Path, seed: int) -> Path:
    env = {**os.environ, "nnUNet_results": str(results), "NNUNET_IPH_SEED": str(seed), "nnUNet_n_proc_DA": "0",
           "NNUNET_IPH_TORCH_THREADS": "2", "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, "-m", "nnunet_iph.benchmarking.nnunet_train",
                           str(phantom_dataset.dataset_id), "2d", "1", "-tr", TRAINER, "-device", "cpu"],
                          capture_output=True, text=True, encoding="utf-8", errors="replace", env=env, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return results / phantom_dataset.folder_name / f"{TRAINER}__nnUNetPlans__2d" / "fold_1"


def weights(fold: Path) -> dict:
    return torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)["network_weights"]


@pytest.mark.slow
def test_seeded_training_repeats_exactly(phantom_dataset, tmp_path):
    first, second = (train(phantom_dataset, tmp_path / name, 0) for name in ("a", "b"))
    other = train(phantom_dataset, tmp_path / "c", 1)
    a, b, c = weights(first), weights(second), weights(other)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    dice = [json.loads((f / "validation" / "summary.json").read_text(encoding="utf-8"))["foreground_mean"]["Dice"]
            for f in (first, second)]
    assert dice[0] == dice[1]
