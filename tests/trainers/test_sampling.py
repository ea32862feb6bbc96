"""Lesion-centred sampling by name: ``<Trainer>_fg<NN>`` sets nnU-Net's foreground oversampling,
composes with the schedule suffixes, is found by nnU-Net and the static catalog, and the real data
loader then centres every patch on hemorrhage (``_fg100``) where nnU-Net's 0.33 does not."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import pytest

from nnunet_iph import trainer_catalog

torch = pytest.importorskip("torch")

import nnunet_iph.trainers as trainers  # noqa: E402
from nnunet_iph.environment import nnunet_env  # noqa: E402
from nnunet_iph.trainers.checkpointing import AtomicCheckpoints  # noqa: E402
from nnunet_iph.trainers.schedules import seed_everything  # noqa: E402
from tests.conftest import run_cli  # noqa: E402
from tests.networks.conftest import DATASET_JSON, SMALL_2D, nnunet_plans  # noqa: E402

NAMES = {  # name -> (base, foreground fraction, epochs or None)
    "nnUNetTrainerFocalDice_fg66": ("nnUNetTrainerFocalDice", 0.66, None),
    "nnUNetTrainer_fg100": ("nnUNetTrainer", 1.0, None),
    "nnUNetTrainer_fg1": ("nnUNetTrainer", 0.01, None),
    "nnUNetTrainerFPNAdam_fg100_30ep_50it_noTTA": ("nnUNetTrainerFPNAdam", 1.0, 30),
    "nnUNetTrainerVNet_fg50_2ep_5it": ("nnUNetTrainerVNet", 0.5, 2),
}
REJECTED = ["nnUNetTrainer_fg0", "nnUNetTrainer_fg101", "nnUNetTrainer_fgx", "nnUNetTrainerFPN_fg066",
            "nnUNetTrainerFPN_fg", "nnUNetTrainerFPN_2ep_5it_fg66", "nnUNetTrainerFPN_fg66_fg33",
            "nnUNetTrainerFPM_fg66", "nnUNetTrainerFPN_fg66_noTTA"]


@pytest.mark.parametrize("name", sorted(NAMES))
def test_names_resolve_compose_and_set_the_fraction(name):
    base, fraction, epochs = NAMES[name]
    cls = getattr(trainers, name)
    assert cls is getattr(trainers, name) and cls.__name__ == name and cls.__module__ == "nnunet_iph.trainers"
    assert pickle.loads(pickle.dumps(cls)) is cls
    assert issubclass(cls, AtomicCheckpoints) and base in [c.__name__ for c in cls.__mro__]
    plans = {**nnunet_plans({"2d": SMALL_2D}), "continue_training": False}  # run_training.py adds this key
    trainer = cls(plans, "2d", 0, DATASET_JSON, device=torch.device("cpu"))
    assert trainer.oversample_foreground_percent == fraction
    assert trainer.my_init_kwargs["configuration"] == "2d"  # nnU-Net's record of the init arguments
    if epochs is not None:  # the schedule wraps the sampling variant, which is cached under its own name
        assert trainer.num_epochs == epochs
        sampling = getattr(trainers, name.split(f"_{epochs}ep_")[0])
        assert cls.__bases__[0] is sampling and pickle.loads(pickle.dumps(sampling)) is sampling


def test_invalid_percentages_are_refused_with_a_reason():
    for name in ("nnUNetTrainer_fg0", "nnUNetTrainer_fg101", "nnUNetTrainerFPN_fg066_2ep_5it"):
        with pytest.raises(ValueError, match="percentage 1..100"):
            getattr(trainers, name)
    for name in ("nnUNetTrainer_fgx", "nnUNetTrainerFPN_2ep_5it_fg66", "nnUNetTrainerNope_fg66"):
        with pytest.raises(AttributeError):
            getattr(trainers, name)


def test_static_catalog_accepts_and_rejects_like_the_runtime():
    assert trainer_catalog.unknown_trainers([*NAMES, *REJECTED]) == REJECTED
    assert trainer_catalog.suggest("nnUNetTrainer_fg101") == (
        " (_fg101: foreground oversampling needs a percentage 1..100 without leading zero)")
    assert trainer_catalog.suggest("nnUNetTrainerFPN_2ep_5it_noTTA_fg66") == (
        " (suffixes go in the order _fg<NN>_<E>ep_<I>it_noTTA: did you mean nnUNetTrainerFPN_fg66_2ep_5it_noTTA?)")
    assert trainer_catalog.suggest("nnUNetTrainerFPM_fg66_2ep_5it") == " (did you mean nnUNetTrainerFPN_fg66_2ep_5it?)"


def test_nnunet_finds_sampling_variants_through_the_shim():
    """nnU-Net's lookup from a fresh interpreter: the one train and predict (checkpoint name) use."""
    names = ["nnUNetTrainerFocalDice_fg66", "nnUNetTrainerFPNAdam_fg100_30ep_50it_noTTA", "nnUNetTrainer_fg100"]
    code = ("import json, pickle\n"
            "from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as find\n"
            f"classes = [find(n) for n in {names!r}]\n"
            "print(json.dumps([[c.__module__, c.__name__, pickle.loads(pickle.dumps(c)) is c] for c in classes]))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8",
                          errors="replace", env={**os.environ, **nnunet_env()}, cwd="/", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [["nnunet_iph.trainers", n, True] for n in names]


def _sampled_patches(phantom_dataset, cls: type, seed: int, batches: int) -> tuple[list[tuple[str, bool]], set[str]]:
    """(case, whether the patch holds hemorrhage) for each patch of ``batches`` training batches
    (after augmentation), and the training cases that contain hemorrhage at all."""
    plans = {**json.loads((phantom_dataset.preprocessed / "nnUNetPlans.json").read_text(encoding="utf-8")),
             "continue_training": False}
    dataset_json = json.loads((phantom_dataset.preprocessed / "dataset.json").read_text(encoding="utf-8"))
    seed_everything(seed)
    trainer = cls(plans, "2d", 0, dataset_json, device=torch.device("cpu"))
    trainer.initialize()  # batch size and (DDP) oversampling are fixed here, as in a real run
    assert trainer.batch_size == 10
    train_loader, _ = trainer.get_dataloaders()
    seen = []
    for _ in range(batches):
        batch = next(train_loader)
        full_resolution = batch["target"][0] if isinstance(batch["target"], list) else batch["target"]
        seen += [(key, bool((patch == 1).any())) for key, patch in zip(batch["keys"], full_resolution)]
    cases, _ = trainer.get_tr_and_val_datasets()
    with_lesion = {k for k in cases.identifiers if len(cases.load_case(k)[3]["class_locations"][1])}
    return seen, with_lesion


def test_the_data_loader_centres_every_patch_on_hemorrhage_with_fg100(phantom_dataset, monkeypatch):
    """Seed 0, 3 training batches (augmented) of the phantom's 2d plans, batch size 10, fold 0 (6
    cases, 2 of them without hemorrhage: there nnU-Net falls back to a random patch). With ``_fg100``
    every patch of a case with hemorrhage holds hemorrhage voxels; with nnU-Net's 0.33 only the last
    round(10 * 0.33) = 3 of each batch are forced, and some of the 7 random ones miss the lesions."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    monkeypatch.setenv("nnUNet_n_proc_DA", "0")  # augmentation in this process: seeded, no workers
    torch.set_num_threads(1)
    forced, with_lesion = _sampled_patches(phantom_dataset, trainers.nnUNetTrainer_fg100, seed=0, batches=3)
    default, _ = _sampled_patches(phantom_dataset, nnUNetTrainer, seed=0, batches=3)
    assert len(forced) == len(default) == 30 and len(with_lesion) == 4
    forced_lesion = [hit for case, hit in forced if case in with_lesion]
    assert len(forced_lesion) >= 10 and all(forced_lesion)
    assert not any(hit for case, hit in forced + default if case not in with_lesion)
    assert not all(hit for case, hit in default if case in with_lesion)
    assert all(hit for j, (case, hit) in enumerate(default) if j % 10 >= 7 and case in with_lesion)


@pytest.mark.slow
def test_train_and_predict_with_a_composed_name_through_nnunet_cli(phantom_dataset, tmp_path):
    """The real entry points (~1.5 min on 2 cores): nnU-Net records the fraction it trained with, and
    prediction finds the class again by the name stored in the checkpoint."""
    trainer = "nnUNetTrainer_fg100_1ep_2it_noTTA"
    run_cli("nnUNetv2_train", str(phantom_dataset.dataset_id), "2d", "0", "-tr", trainer, "-device", "cpu",
            timeout=1800)
    fold = phantom_dataset.results / f"{trainer}__nnUNetPlans__2d" / "fold_0"
    debug = json.loads((fold / "debug.json").read_text(encoding="utf-8"))
    assert debug["oversample_foreground_percent"] == "1.0"
    assert torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)["trainer_name"] == trainer
    out = tmp_path / "pred"
    run_cli("nnUNetv2_predict", "-i", str(phantom_dataset.raw / "imagesTs"), "-o", str(out), "-d",
            str(phantom_dataset.dataset_id), "-c", "2d", "-f", "0", "-tr", trainer, "-chk", "checkpoint_final.pth",
            "-device", "cpu", "-npp", "0", "-nps", "0", timeout=1800)
    cases = sorted(p.name.replace("_0000.nii.gz", ".nii.gz") for p in (phantom_dataset.raw / "imagesTs").iterdir())
    assert sorted(p.name for p in out.glob("*.nii.gz")) == cases
