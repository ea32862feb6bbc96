"""The architecture trainers: nnU-Net finds them, they build our networks from plans, train on CPU."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

import nnunet_iph.trainers as trainers
from nnunet_iph.networks import NETWORKS, SegmentationNetwork
from nnunet_iph.trainers.focal_dice import nnUNetTrainerFocalDice
from tests.conftest import run_cli
from tests.networks.conftest import DATASET_JSON, SMALL_2D, SMALL_3D, deep_supervision_shapes, nnunet_plans

torch.set_num_threads(1)

BASE_TRAINERS = {  # the issue's names -> network class and default encoder
    "nnUNetTrainerVGG16UNet": ("UNet", "vgg16"),
    "nnUNetTrainerAttentionUNet": ("AttentionUNet", "vgg16"),
    "nnUNetTrainerFPN": ("FPN", "vgg16"),
    "nnUNetTrainerTransUNet": ("TransUNet", "vgg16"),
    "nnUNetTrainerSwinUNet": ("SwinUNet", "swin"),
    "nnUNetTrainerUNetPlusPlus": ("UNetPlusPlus", "vgg16"),
    "nnUNetTrainerResUNet": ("ResUNet", "resunet"),
    "nnUNetTrainerLinkNet": ("LinkNet", "resnet"),
    "nnUNetTrainerDenseNetCoarse": ("DenseNetCoarse", "dense"),
}
# from the package's own discovery: a trainer added in a new module is tested here without editing this file
ARCH_TRAINERS = {n: c for n, c in trainers.DEFINED_TRAINERS.items()
                 if hasattr(c.build_network_architecture, "network_class")}
ALL_TRAINERS = {n: c for n, c in trainers.TRAINERS.items() if issubclass(c, nnUNetTrainerFocalDice)}
NETWORK_TRAINERS = {n: c for n, c in ALL_TRAINERS.items() if hasattr(c.build_network_architecture, "network_class")}


def small_plans() -> dict:
    """Tiny plans whose configurations also set our networks' own arguments (width, ViT depth)."""
    configs = {}
    for name, config in (("2d", SMALL_2D), ("3d_fullres", SMALL_3D)):
        config = copy.deepcopy(config)
        config["architecture"]["arch_kwargs"].update(width=0.125, vit_depth=1)
        configs[name] = config
    return nnunet_plans(configs)


def test_issue_trainer_names_exist_and_are_exported():
    assert set(BASE_TRAINERS) <= set(ARCH_TRAINERS)
    for name in ALL_TRAINERS:
        assert getattr(trainers, name) is ALL_TRAINERS[name]
        assert issubclass(ALL_TRAINERS[name], nnUNetTrainerFocalDice)
    assert "nnUNetTrainerFocalDiceAdam" in trainers.ADAM_TRAINERS
    assert {f"{n}Adam" for n in ARCH_TRAINERS} <= set(trainers.ADAM_TRAINERS)
    assert len(NETWORK_TRAINERS) == 2 * len(ARCH_TRAINERS)


def test_speed_benchmark_covers_every_network_class_once():
    import importlib.util

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("networks_speed", REPO / "benchmarks" / "networks_speed.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    names = bench.reference_architectures()
    classes = [ARCH_TRAINERS[n].build_network_architecture.network_class for n in names]
    assert len(set(classes)) == len(classes) == len({c.build_network_architecture.network_class
                                                    for c in ARCH_TRAINERS.values()})
    assert set(BASE_TRAINERS) | {"nnUNetTrainerVNet"} == set(names)


@pytest.mark.parametrize("name", ["nnUNetTrainerFPN", "nnUNetTrainerFPN_2ep_5it", "nnUNetTrainerDenseNetCoarseAdam",
                                  "nnUNetTrainerSwinUNetAdam_1ep_2it"])
def test_nnunet_finds_trainers_by_name(name):
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    cls = recursive_find_trainer_class_by_name(name)
    assert cls.__name__ == name and cls is getattr(trainers, name)


def test_build_network_architecture_has_nnunet_signature():
    import inspect

    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    for cls in ALL_TRAINERS.values():
        assert isinstance(inspect.getattr_static(cls, "build_network_architecture"), staticmethod)
        assert (list(inspect.signature(cls.build_network_architecture).parameters)
                == list(inspect.signature(nnUNetTrainer.build_network_architecture).parameters))


@pytest.mark.parametrize("configuration", ["2d", "3d_fullres"])
@pytest.mark.parametrize("name", sorted(NETWORK_TRAINERS))
def test_trainer_builds_its_network_from_plans(name, configuration):
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    cls = ALL_TRAINERS[name]
    cm = PlansManager(small_plans()).get_configuration(configuration)
    net = cls.build_network_architecture(PlansManager(small_plans()), cm, 1, 2, True)
    builder = cls.build_network_architecture
    assert type(net) is builder.network_class and net.encoder_name == builder.fixed_kwargs["encoder"]
    assert isinstance(net, SegmentationNetwork) and net.width == 0.125 and list(net.patch_size) == cm.patch_size
    out = net(torch.randn(1, 1, *cm.patch_size))
    assert [tuple(o.shape[2:]) for o in out] == deep_supervision_shapes(small_plans()["configurations"][configuration])
    inference = cls.build_network_architecture(PlansManager(small_plans()), cm, 1, 2, enable_deep_supervision=False)
    inference.load_state_dict(net.state_dict())


@pytest.mark.parametrize("name", sorted(BASE_TRAINERS))
def test_base_trainer_default_network(name):
    network, encoder = BASE_TRAINERS[name]
    builder = ARCH_TRAINERS[name].build_network_architecture
    assert builder.network_class is NETWORKS[network] and builder.fixed_kwargs == {"encoder": encoder}


@pytest.fixture
def trainer_dirs(tmp_path, monkeypatch):
    """Private nnU-Net folders; initialize() only sniffs the preprocessed folder's file type."""
    preprocessed = tmp_path / "pre" / "Dataset999_Tiny" / SMALL_2D["data_identifier"]
    preprocessed.mkdir(parents=True)
    (preprocessed / "case.b2nd").touch()
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))


def _initialized_trainer(cls, configuration="2d"):
    plans = {**small_plans(), "continue_training": False}  # run_training.py adds this key
    trainer = cls(plans, configuration, 0, DATASET_JSON, device=torch.device("cpu"))
    trainer.initialize()
    return trainer


@pytest.mark.parametrize("name", ["nnUNetTrainerFPN", "nnUNetTrainerSwinUNet", "nnUNetTrainerDenseNetCoarse"])
def test_trainer_initialises_and_its_loss_pairs_with_deep_supervision(name, trainer_dirs):
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper

    trainer = _initialized_trainer(ALL_TRAINERS[name])
    assert isinstance(trainer.optimizer, torch.optim.SGD) and trainer.initial_lr == 1e-2  # nnU-Net default
    assert isinstance(trainer.loss, DeepSupervisionWrapper)
    patch = trainer.configuration_manager.patch_size
    scales = trainer._get_deep_supervision_scales()
    targets = [torch.randint(0, 2, (2, 1, *[int(round(p * s)) for p, s in zip(patch, scale)])) for scale in scales]
    out = trainer.network(torch.randn(2, 1, *patch))
    assert len(out) == len(scales)
    loss = trainer.loss(out, targets)
    loss.backward()
    assert torch.isfinite(loss)
    trainer.set_deep_supervision_enabled(False)
    assert isinstance(trainer.network(torch.randn(1, 1, *patch)), torch.Tensor)


def test_adam_variant_uses_the_paper_hyperparameters(trainer_dirs):
    trainer = _initialized_trainer(trainers.ADAM_TRAINERS["nnUNetTrainerFPNAdam"])
    assert type(trainer.optimizer) is torch.optim.Adam
    assert trainer.optimizer.param_groups[0]["lr"] == 5e-4 and trainer.initial_lr == 5e-4
    scheduler = trainer.lr_scheduler
    scheduler.step(7)  # nnU-Net's per-epoch call: must not touch the lr
    assert trainer.optimizer.param_groups[0]["lr"] == 5e-4
    for epoch in range(12):  # no improvement for > patience (10) epochs -> x 0.1
        trainer.current_epoch = epoch
        trainer.on_validation_epoch_end([{"loss": np.array(1.0), "tp_hard": np.array([1.0]),
                                          "fp_hard": np.array([1.0]), "fn_hard": np.array([1.0])}])
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(5e-5)


def test_noTTA_schedule_keeps_training_mirroring_but_not_inference_mirroring(trainer_dirs):
    plain = _initialized_trainer(trainers.nnUNetTrainerFPN_2ep_3it)
    fast = _initialized_trainer(trainers.nnUNetTrainerFPN_2ep_3it_noTTA)
    assert fast.num_epochs == 2 and fast.num_iterations_per_epoch == 3
    # nnU-Net calls this in on_train_start; [3] = mirror axes of the training augmentation
    assert plain.configure_rotation_dummyDA_mirroring_and_inital_patch_size()[3] == (0, 1)
    assert fast.configure_rotation_dummyDA_mirroring_and_inital_patch_size()[3] == (0, 1)
    assert plain.inference_allowed_mirroring_axes == (0, 1)
    assert fast.inference_allowed_mirroring_axes is None  # stored in the checkpoint -> predictions unmirrored


# ---- end to end through nnU-Net's CLIs on the phantom ----------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BASE_TRAINERS) + ["nnUNetTrainerAttentionUNetAdam"])
def test_train_and_predict_through_nnunet_cli(name, phantom_dataset, tmp_path):
    trainer = f"{name}_2ep_3it"
    run_cli("nnUNetv2_train", str(phantom_dataset.dataset_id), "2d", "0", "-tr", trainer, "-device", "cpu",
            timeout=1800)
    fold = phantom_dataset.results / f"{trainer}__nnUNetPlans__2d" / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file()
    summary = json.loads((fold / "validation" / "summary.json").read_text(encoding="utf-8"))
    assert len(summary["metric_per_case"]) >= 1
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["trainer_name"] == trainer
    out = tmp_path / "pred"
    run_cli("nnUNetv2_predict", "-i", str(phantom_dataset.raw / "imagesTs"), "-o", str(out), "-d",
            str(phantom_dataset.dataset_id), "-c", "2d", "-f", "0", "-tr", trainer, "-device", "cpu",
            "-npp", "0", "-nps", "0", "--disable_tta", timeout=1800)
    cases = sorted(p.name.replace("_0000.nii.gz", ".nii.gz") for p in (phantom_dataset.raw / "imagesTs").iterdir())
    assert sorted(p.name for p in out.glob("*.nii.gz")) == cases
