"""Trainer discovery, schedule variants and the nnUNet_extTrainer shim, as nnU-Net resolves them."""

import os
import pickle
import subprocess
import sys

import pytest

pytest.importorskip("torch")

import nnunet_iph.trainers as trainers  # noqa: E402
from nnunet_iph.environment import EXT_TRAINER_DIR, export_lines, nnunet_env  # noqa: E402


def test_discovery_exports_our_trainers():
    assert "nnUNetTrainerFocalDice" in trainers.__all__
    assert all(name.startswith("nnUNetTrainer") for name in trainers.__all__)


def test_schedule_variant_is_cached_picklable_and_configured():
    cls = trainers.nnUNetTrainerFocalDice_3ep_7it
    assert cls is trainers.nnUNetTrainerFocalDice_3ep_7it
    assert issubclass(cls, trainers.nnUNetTrainerFocalDice)
    assert pickle.loads(pickle.dumps(cls)) is cls
    default = trainers.nnUNetTrainer_2ep_5it
    assert default.__bases__[-1].__name__ == "nnUNetTrainer"
    with pytest.raises(AttributeError):
        trainers.nnUNetTrainerDoesNotExist_2ep_5it
    with pytest.raises(ValueError, match=">= 1 epoch"):
        trainers.nnUNetTrainerFocalDice_0ep_5it


def test_nnunet_finds_trainers_through_the_shim(monkeypatch):
    """nnU-Net's own lookup (used by train and predict) from a fresh interpreter."""
    code = ("from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as find\n"
            "for n in ('nnUNetTrainerFocalDice', 'nnUNetTrainerFocalDice_2ep_5it', 'nnUNetTrainer_2ep_5it'):\n"
            "    c = find(n)\n"
            "    print(n, c.__module__)\n")
    env = {**os.environ, **nnunet_env()}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8", errors="replace", env=env, cwd="/")
    assert proc.returncode == 0, proc.stderr
    for name in ("nnUNetTrainerFocalDice", "nnUNetTrainerFocalDice_2ep_5it", "nnUNetTrainer_2ep_5it"):
        assert f"{name} nnunet_iph.trainers" in proc.stdout, proc.stdout


def test_env_exports(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_extTrainer", "/other/plugin")
    env = nnunet_env(tmp_path / "w")
    assert env["nnUNet_extTrainer"].split(os.pathsep) == [str(EXT_TRAINER_DIR), "/other/plugin"]
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        assert os.path.isdir(env[key])
    assert sorted(p.name for p in EXT_TRAINER_DIR.glob("*.py")) == ["nnunet_iph_trainers.py"]
    lines = export_lines({"A": "x y"})
    assert lines == "export A='x y'"


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    """A save that dies midway keeps the previous checkpoint and leaves no temporary file."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    target = tmp_path / "checkpoint_latest.pth"
    target.write_bytes(b"previous")

    def dying_save(self, filename):
        with open(filename, "wb") as fh:
            fh.write(b"trunc")
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(nnUNetTrainer, "save_checkpoint", dying_save)
    trainer = object.__new__(trainers.nnUNetTrainerFocalDice_1ep_1it)
    trainer.local_rank, trainer.disable_checkpointing = 0, False
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint(str(target))
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_latest.pth"]
    monkeypatch.setattr(nnUNetTrainer, "save_checkpoint", lambda self, f: open(f, "wb").write(b"new"))
    trainer.save_checkpoint(str(target))
    assert target.read_bytes() == b"new"
