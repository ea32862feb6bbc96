"""What ``slurm plan`` refuses before anything is submitted, and what ``--dry-run`` leaves on disk (nothing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_iph.cluster.experiment import build_experiment, load_experiment
from tests.cluster.test_cluster_scripts import DATASET, experiment_dict
from tests.conftest import run_cli


def write_experiment(tmp_path: Path, **over) -> Path:
    path = tmp_path / "exp.json"
    path.write_text(json.dumps(experiment_dict(tmp_path, **over)), encoding="utf-8")
    return path


def train(**entry) -> list[dict]:
    return [{"name": "grid", "trainers": ["nnUNetTrainer"], "configurations": ["2d"], "folds": [0], **entry}]


def preprocessed(tmp_path: Path, plans: dict[str, list[str]]) -> Path:
    folder = tmp_path / "nnUNet_preprocessed" / DATASET
    folder.mkdir(parents=True, exist_ok=True)
    for name, configs in plans.items():
        (folder / f"{name}.json").write_text(json.dumps({"configurations": dict.fromkeys(configs, {})}))
    return folder


@pytest.mark.parametrize("entry, key, value", [
    ({"folds": [0, 0]}, "folds", "0"),
    ({"folds": [1, "01"]}, "folds", "1"),  # nnU-Net writes both to fold_1
    ({"trainers": ["nnUNetTrainer", "nnUNetTrainer"]}, "trainers", "nnUNetTrainer"),
    ({"configurations": ["2d", "2d"]}, "configurations", "2d"),
    ({"plans": ["nnUNetPlans", "nnUNetPlans"]}, "plans", "nnUNetPlans"),
])
def test_duplicate_tasks_in_one_stage_are_refused_naming_file_and_key(tmp_path, entry, key, value):
    path = write_experiment(tmp_path, train=train(**entry), predict=[], job=[])
    with pytest.raises(ValueError) as err:
        load_experiment(path)
    assert str(err.value).startswith(f"{path}: [[train]] 'grid' {key}: {value} listed twice")


def test_duplicate_tasks_across_stages_are_refused(tmp_path):
    stages = train() + [{"name": "again", "trainers": ["nnUNetTrainer"], "configurations": ["2d"], "folds": [0, 1]}]
    with pytest.raises(ValueError, match=r"\[\[train\]\] 'again': nnUNetTrainer__nnUNetPlans__2d fold 0 is also "
                                         r"trained by \[\[train\]\] 'grid'"):
        build_experiment(experiment_dict(tmp_path, train=stages, predict=[], job=[]))


def test_unknown_trainers_are_refused_known_and_generated_names_pass(tmp_path):
    path = write_experiment(tmp_path, train=train(trainers=["nnUNetTrainerFPM_2ep_5it"]), predict=[], job=[])
    with pytest.raises(ValueError) as err:
        load_experiment(path)
    message = str(err.value)
    assert message.startswith(f"{path}: [[train]] 'grid' trainers: 'nnUNetTrainerFPM_2ep_5it' (did you mean "
                              "nnUNetTrainerFPN_2ep_5it?)")
    assert "`nnunet-iph trainers`" in message
    names = ["nnUNetTrainer", "nnUNetTrainer_250epochs", "nnUNetTrainerFPNAdam", "nnUNetTrainerSwinUNetAdam_1ep_2it",
             "nnUNetTrainerFocalDice_20ep_25it_noTTA", "nnUNetTrainerCascadeFine"]
    exp = build_experiment(experiment_dict(tmp_path, train=train(trainers=names), predict=[], job=[]))
    assert {t.trainer for t in exp.stage("grid").tasks} == set(names)


def test_trainers_of_ext_trainer_dirs_count_as_defined(tmp_path):
    ext = tmp_path / "plugins"
    ext.mkdir()
    (ext / "mine.py").write_text("class nnUNetTrainerMine:\n    pass\n")
    raw = experiment_dict(tmp_path, train=train(trainers=["nnUNetTrainerMine"]), predict=[], job=[])
    with pytest.raises(ValueError, match="'nnUNetTrainerMine'"):
        build_experiment(raw)
    assert build_experiment({**raw, "ext_trainer_dirs": [str(ext)]}).stage("grid").tasks[0].trainer == "nnUNetTrainerMine"


def test_configurations_are_checked_against_the_plans_file_when_reachable(tmp_path):
    raw = experiment_dict(tmp_path, train=train(configurations=["2d", "3d_fullres"]), predict=[], job=[])
    exp = build_experiment(raw)  # nothing preprocessed is reachable: a note, not an error
    assert any("not reachable" in n and "not checked" in n for n in exp.notes)
    plans = preprocessed(tmp_path, {"nnUNetPlans": ["2d"]})
    with pytest.raises(ValueError, match=rf"\[\[train\]\] 'grid' configurations: \['3d_fullres'\] not in "
                                         rf"{plans}/nnUNetPlans.json \(it has \['2d'\]\)"):
        build_experiment(raw)
    with pytest.raises(ValueError, match=r"plans: .*nnUNetPlans_coronal.json not found; run `nnunet-iph plan`"):
        build_experiment({**raw, "train": train(plans=["nnUNetPlans_coronal"])})
    # a stage that waits for another one (which may write the plans) is only warned about
    waiting = {**raw, "job": [{"name": "plan", "command": "nnunet-iph plan -d 501"}],
               "train": train(configurations=["2d", "3d_fullres"], after=["plan"])}
    assert any("3d_fullres" in n for n in build_experiment(waiting).notes)
    preprocessed(tmp_path, {"nnUNetPlans": ["2d", "3d_fullres"]})
    assert build_experiment(raw).notes == []


def test_dataset_must_exist_when_the_data_folders_are_reachable(tmp_path):
    raw = experiment_dict(tmp_path, train=train(), predict=[], job=[])
    build_experiment(raw)  # folders not reachable from here (another machine's paths): not checked
    (tmp_path / "nnUNet_raw" / "Dataset502_Other").mkdir(parents=True)
    with pytest.raises(ValueError, match=rf"dataset: no {DATASET} folder in {tmp_path}/nnUNet_raw; convert it first"):
        build_experiment(raw)


def test_checks_do_not_import_torch(tmp_path):
    path = write_experiment(tmp_path, train=train(trainers=["nnUNetTrainerFPNAdam_2ep_3it"]), predict=[], job=[])
    code = (f"import sys; from nnunet_iph.cluster.experiment import load_experiment; load_experiment({str(path)!r}); "
            "assert 'torch' not in sys.modules and 'nnunetv2' not in sys.modules, 'heavy import'")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})


def test_submit_dry_run_writes_nothing(tmp_path):
    path = write_experiment(tmp_path)
    out = tmp_path / "out"
    proc = run_cli("nnunet-iph", "slurm", "submit", str(path), "-o", str(out), "--dry-run")
    assert not out.exists()
    assert f"sbatch --parsable {out}/planes.sbatch" in proc.stdout
    assert "--dependency=afterok:<planes>" in proc.stdout


def test_plan_output_folder_errors_are_one_line(tmp_path):
    path = write_experiment(tmp_path)
    (tmp_path / "afile").write_text("x")
    proc = run_cli("nnunet-iph", "slurm", "plan", str(path), "-o", str(tmp_path / "afile"), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"nnunet-iph slurm: error: -o {tmp_path / 'afile'}: an existing file, not a folder (-o is the folder for "
        "the scripts, logs and state)")
    if Path("/sys/kernel").is_dir():  # unwritable even for root
        proc = run_cli("nnunet-iph", "slurm", "plan", str(path), "-o", "/sys/nnunet_iph_test", check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("nnunet-iph slurm: error: /sys/nnunet_iph_test")
