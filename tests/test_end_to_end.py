"""As a new user would: a fresh shell, ``eval "$(nnunet-iph env --workdir W)"``, then plain nnU-Net CLIs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_fresh_shell_train_and_predict_with_our_trainer(phantom_dataset, tmp_path):
    workdir = phantom_dataset.raw.parents[1]
    bin_dir = Path(sys.executable).parent
    out = tmp_path / "pred"
    trainer = "nnUNetTrainerFocalDice_1ep_4it"
    script = f"""
set -euo pipefail
eval "$(nnunet-iph env --workdir {workdir})"
cd /
nnUNetv2_train 501 2d 0 -tr {trainer} -device cpu
nnUNetv2_predict -i {phantom_dataset.raw / 'imagesTs'} -o {out} -d 501 -c 2d -f 0 -tr {trainer} -device cpu -npp 0 -nps 0 --disable_tta
"""
    clean_env = {"PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"),
                 "nnUNet_n_proc_DA": "2", "nnUNet_def_n_proc": "2", "nnUNet_compile": "f", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", "-c", script], env=clean_env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    fold = phantom_dataset.results / f"{trainer}__nnUNetPlans__2d" / "fold_0"
    summary = json.loads((fold / "validation" / "summary.json").read_text(encoding="utf-8"))
    assert "foreground_mean" in summary and len(summary["metric_per_case"]) >= 1
    assert (fold / "checkpoint_final.pth").is_file()
    test_cases = sorted(p.name.replace("_0000.nii.gz", ".nii.gz") for p in (phantom_dataset.raw / "imagesTs").iterdir())
    assert sorted(p.name for p in out.glob("*.nii.gz")) == test_cases
