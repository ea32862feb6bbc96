"""Fine-stage trainers of the coarse-to-fine cascade (plans: :mod:`nnunet_iph.planning.cascade`).

nnU-Net's fine stage reads the coarse predictions from a results folder named after the *fine*
trainer's own class, so a coarse stage trained by another trainer (the 2D DenseNet) is never
found. These trainers look up the coarse trainer (``$NNUNET_IPH_COARSE_TRAINER``, the plans'
``previous_stage_trainer``, or the only candidate folder), check that every training and
validation case has a coarse output, and stop with a message saying which coarse folds to train
or re-validate, instead of a blosc2 error deep in a data-loader worker.

``nnUNetTrainerCascadeFine``: coarse argmax as one-hot channel(s) (nnU-Net's cascade input).
``nnUNetTrainerCascadeFineProb``: the coarse foreground *probability* as the extra channel,
from the coarse stage's validation ``.npz`` (train it with ``--npz``); single foreground label.
Inference with the probability variant needs ``nnunet-iph predict --pipeline cascade``
(``nnUNetv2_predict -prev_stage_predictions`` only passes label maps).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.nnunet.seg_to_onehot import MoveSegAsOneHotToDataTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.random import RandomTransform
import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as _trainer_module
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_iph.planning.cascade import (PROBABILITY_LEVELS, check_coarse_outputs, export_coarse_probabilities,
                                         resolve_coarse_trainer)
from nnunet_iph.trainers.checkpointing import AtomicCheckpoints


class nnUNetTrainerCascadeFine(AtomicCheckpoints, nnUNetTrainer):
    """Fine stage: image + coarse mask (one-hot), coarse stage trained by any trainer class."""

    coarse_input = "argmax"

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if not self.is_cascaded:
            raise ValueError(f"{self.__class__.__name__} needs a cascade configuration (one with 'previous_stage'); "
                             f"{configuration!r} of plans {self.plans_manager.plans_name!r} has none. Use the fine "
                             "configuration written by `nnunet-iph plan --cascade` (e.g. 3d_fine)")
        self.coarse_trainer_name: str | None = None

    def _use_previous_stage(self, cases: list[str]) -> None:
        """Point ``folder_with_segs_from_previous_stage`` at the coarse outputs (checked) for ``cases``."""
        dataset = self.plans_manager.dataset_name
        plans = self.plans_manager.plans
        self.coarse_trainer_name = resolve_coarse_trainer(dataset, plans, self.configuration_name,
                                                          fine_trainer=self.__class__.__name__)
        if self.coarse_input == "probabilities":
            folder = export_coarse_probabilities(dataset, plans, self.configuration_name, self.coarse_trainer_name,
                                                 cases)
        else:
            folder = check_coarse_outputs(dataset, plans, self.configuration_name, self.coarse_trainer_name, cases)
        if str(folder) != self.folder_with_segs_from_previous_stage:
            self.print_to_log_file(f"coarse stage ({self.coarse_input}) from {self.coarse_trainer_name}: {folder}")
        self.folder_with_segs_from_previous_stage = str(folder)

    def do_split(self):
        tr_keys, val_keys = super().do_split()
        self._use_previous_stage(sorted(set(tr_keys) | set(val_keys)))
        return tr_keys, val_keys


class MoveSegAsProbabilityToDataTransform(BasicTransform):
    """Append segmentation channel ``source_channel_idx`` (quantised probability) to the image as float."""

    def __init__(self, source_channel_idx: int = 1, levels: int = PROBABILITY_LEVELS):
        super().__init__()
        self.source_channel_idx = source_channel_idx
        self.levels = levels

    def apply(self, data_dict, **params):
        seg = data_dict["segmentation"]
        img = data_dict["image"]
        prob = (seg[self.source_channel_idx].to(img.dtype) / self.levels).clamp_(0, 1)
        data_dict["image"] = torch.cat((img, prob[None]), 0)
        keep = [i for i in range(seg.shape[0]) if i != self.source_channel_idx]
        data_dict["segmentation"] = seg[keep]
        return data_dict


def _probability_transforms(compose: ComposeTransforms) -> ComposeTransforms:
    """Swap nnU-Net's one-hot cascade input for the probability channel; drop the mask-only augmentations
    (morphological operators, removal of connected components), which assume a binary channel."""
    out = []
    for t in compose.transforms:
        if isinstance(t, MoveSegAsOneHotToDataTransform):
            out.append(MoveSegAsProbabilityToDataTransform(t.source_channel_idx))
        elif isinstance(t, RandomTransform) and type(t.transform).__name__ in (
                "ApplyRandomBinaryOperatorTransform", "RemoveRandomConnectedComponentFromOneHotEncodingTransform"):
            continue
        else:
            out.append(t)
    return ComposeTransforms(out)


def _probability_channel(seg_prev, foreground_labels, output_dtype=np.float32):
    """Stand-in for nnU-Net's ``convert_labelmap_to_one_hot`` during the fine stage's validation."""
    return (np.asarray(seg_prev, dtype=np.float32)[None] / PROBABILITY_LEVELS).clip(0, 1).astype(output_dtype)


class nnUNetTrainerCascadeFineProb(nnUNetTrainerCascadeFine):
    """Fine stage: image + coarse foreground probability (one channel)."""

    coarse_input = "probabilities"

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if len(self.label_manager.foreground_labels) != 1 or self.label_manager.has_regions:
            raise ValueError(f"{self.__class__.__name__} supports one foreground label (the channel count of the "
                             "cascade input is fixed by nnU-Net); labels here: "
                             f"{self.label_manager.foreground_labels}. Use nnUNetTrainerCascadeFine")

    @staticmethod
    def get_training_transforms(*args, **kwargs):
        return _probability_transforms(nnUNetTrainer.get_training_transforms(*args, **kwargs))

    @staticmethod
    def get_validation_transforms(*args, **kwargs):
        return _probability_transforms(nnUNetTrainer.get_validation_transforms(*args, **kwargs))

    def perform_actual_validation(self, save_probabilities: bool = False):
        with _patched(_trainer_module, "convert_labelmap_to_one_hot", _probability_channel):
            return super().perform_actual_validation(save_probabilities)


@contextlib.contextmanager
def _patched(module, name: str, value):
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)
