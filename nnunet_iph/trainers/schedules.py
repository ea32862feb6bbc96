"""Short training schedules and foreground oversampling by name, without a class per combination.

``<Base>_fg<NN>`` (``nnUNetTrainerFocalDice_fg66``, ``nnUNetTrainer_fg100``) is ``<Base>`` with
nnU-Net's ``oversample_foreground_percent`` set to NN / 100 (default 0.33): the last
``round(batch_size * NN / 100)`` patches of every batch are centred on a foreground voxel, so
``_fg100`` is the MIDL study's lesion-centred ("selective") patching. Suffixes combine in one order,
``<Base>_fg<NN>_<E>ep_<I>it_noTTA`` (:data:`~nnunet_iph.trainer_catalog.SCHEDULE_NAME`).

``<Base>_<E>ep_<I>it`` (for instance ``nnUNetTrainerFocalDice_2ep_5it`` or nnU-Net's own
``nnUNetTrainer_20ep_25it``) is ``<Base>`` with E epochs of I training iterations and
``max(1, I // 5)`` validation iterations, and checkpoints written atomically
(:mod:`~nnunet_iph.trainers.checkpointing`). The suffix ``_noTTA``
(``nnUNetTrainer_20ep_25it_noTTA``) also switches off mirroring at inference: nnU-Net's final
validation mirrors every patch 4x (2D) / 8x (3D), which dominates a short CPU run; the choice is
stored in the checkpoint, so predictions of that model are unmirrored too (as ``--disable_tta``).

nnU-Net does not seed its runs. With ``NNUNET_IPH_SEED=N`` in the environment a schedule variant
seeds Python, NumPy and torch with N + fold before anything random happens; with
``nnUNet_n_proc_DA=0`` (augmentation in the training process) a CPU run is then repeatable.
Each class is created on first lookup and cached on :mod:`nnunet_iph.trainers`, so nnU-Net's
name lookup at train and predict time and pickling all find the same object.
"""

from __future__ import annotations

import os
import random
from typing import Mapping, MutableMapping

import numpy as np

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_iph.trainer_catalog import SCHEDULE_NAME, foreground_percent
from nnunet_iph.trainers.checkpointing import AtomicCheckpoints

SEED_ENV = "NNUNET_IPH_SEED"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_schedule_variant(base: type[nnUNetTrainer], epochs: int, iterations: int,
                          module: str, no_tta: bool = False) -> type[nnUNetTrainer]:
    if epochs < 1 or iterations < 1:
        raise ValueError(f"a schedule needs >= 1 epoch and >= 1 iteration, got {epochs}ep_{iterations}it")
    name = f"{base.__name__}_{epochs}ep_{iterations}it" + ("_noTTA" if no_tta else "")

    # nnU-Net records __init__'s parameters by name (my_init_kwargs): keep its exact signature
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        seed = os.environ.get(SEED_ENV)
        if seed is not None:  # before initialize() draws the weights and the loaders draw patches
            seed_everything(int(seed) + (fold if isinstance(fold, int) else 0))
        base.__init__(self, plans, configuration, fold, dataset_json, device)
        self.num_epochs = epochs
        self.num_iterations_per_epoch = iterations
        self.num_val_iterations_per_epoch = max(1, iterations // 5)

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        # training augmentation keeps its mirroring; only inference (validation, prediction) loses it
        out = base.configure_rotation_dummyDA_mirroring_and_inital_patch_size(self)
        self.inference_allowed_mirroring_axes = None
        return out

    doc = (f"{base.__name__} for {epochs} epochs x {iterations} iterations (short schedule)"
           + (", no mirroring at validation/inference." if no_tta else "."))
    members = {"__init__": __init__, "__module__": module, "__qualname__": name, "__doc__": doc}
    if no_tta:
        members["configure_rotation_dummyDA_mirroring_and_inital_patch_size"] = \
            configure_rotation_dummyDA_mirroring_and_inital_patch_size
    return type(name, _with_atomic_checkpoints(base), members)


def make_sampling_variant(base: type[nnUNetTrainer], percent: int, module: str) -> type[nnUNetTrainer]:
    """``<base>_fg<percent>``: ``base`` with ``oversample_foreground_percent = percent / 100``."""
    percent = foreground_percent(str(percent))
    name = f"{base.__name__}_fg{percent}"

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        base.__init__(self, plans, configuration, fold, dataset_json, device)
        self.oversample_foreground_percent = percent / 100  # read by get_dataloaders, after __init__

    doc = f"{base.__name__} with {percent} % of each batch's patches centred on foreground (nnU-Net: 33 %)."
    return type(name, _with_atomic_checkpoints(base),
                {"__init__": __init__, "__module__": module, "__qualname__": name, "__doc__": doc})


def _with_atomic_checkpoints(base: type[nnUNetTrainer]) -> tuple[type, ...]:
    return (base,) if issubclass(base, AtomicCheckpoints) else (AtomicCheckpoints, base)


def resolve_schedule_name(name: str, bases: Mapping[str, type[nnUNetTrainer]], module: str,
                          cache: MutableMapping[str, type]) -> type[nnUNetTrainer] | None:
    """The class for ``<base>[_fg<NN>][_<E>ep_<I>it[_noTTA]]`` over one of ``bases`` (plus nnU-Net's
    default), else None. New classes go into ``cache`` (the module's namespace) under their names,
    the intermediate ``<base>_fg<NN>`` too: pickle and nnU-Net look them up there by name."""
    match = SCHEDULE_NAME.match(name)
    if match is None:
        return None
    base = {**bases, "nnUNetTrainer": nnUNetTrainer}.get(match["base"])
    if base is None:
        return None
    if match["fg"] is not None:
        sampling = f"{base.__name__}_fg{match['fg']}"
        if sampling not in cache:
            cache[sampling] = make_sampling_variant(base, foreground_percent(match["fg"]), module)
        base = cache[sampling]
    if match["epochs"] is not None and name not in cache:
        cache[name] = make_schedule_variant(base, int(match["epochs"]), int(match["iters"]), module,
                                            no_tta=match["no_tta"] is not None)
    return cache[name]
