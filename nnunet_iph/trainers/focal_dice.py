"""nnU-Net's default network trained with the reference study's focal + F-beta Dice loss."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_iph.losses import FocalFBetaLoss
from nnunet_iph.trainers.checkpointing import AtomicCheckpoints


def deep_supervision_weights(n_scales: int, is_ddp: bool, compiled: bool) -> np.ndarray:
    """nnU-Net's weighting: halve per scale, drop the lowest (tiny weight under DDP), sum to 1."""
    weights = np.array([1 / (2 ** i) for i in range(n_scales)])
    weights[-1] = 1e-6 if is_ddp and not compiled else 0
    return weights / weights.sum()


class nnUNetTrainerFocalDice(AtomicCheckpoints, nnUNetTrainer):
    """Focal (alpha=0.25, gamma=2, paper's negative weight = alpha) + Dice (beta=1), weights 1:1.

    Change the loss by subclassing and overriding ``loss_kwargs`` (keys of
    :class:`~nnunet_iph.losses.FocalFBetaLoss`); the class name must say what changed.
    """

    loss_kwargs: ClassVar[dict[str, Any]] = {}

    def _build_loss(self) -> torch.nn.Module:
        if self.label_manager.has_regions:
            raise ValueError(f"{type(self).__name__} needs softmax labels; region-based training "
                             "(sigmoid outputs) is not supported by the focal + Dice loss")
        loss = FocalFBetaLoss(batch_dice=self.configuration_manager.batch_dice,
                              ignore_label=self.label_manager.ignore_label, ddp=self.is_ddp,
                              **self.loss_kwargs)
        if self.enable_deep_supervision:
            weights = deep_supervision_weights(len(self._get_deep_supervision_scales()), self.is_ddp,
                                               self._do_i_compile())
            loss = DeepSupervisionWrapper(loss, weights)
        return loss


class nnUNetTrainerFocalDiceBalancedNeg(nnUNetTrainerFocalDice):
    """Focal term with negatives weighted by ``1 - alpha`` (RetinaNet / torchvision / MONAI form)."""

    loss_kwargs: ClassVar[dict[str, Any]] = {"negative_weight": 0.75}


class nnUNetTrainerFocalFBeta2(nnUNetTrainerFocalDice):
    """F2 instead of Dice: recall (missed hemorrhage) weighted four times precision."""

    loss_kwargs: ClassVar[dict[str, Any]] = {"beta": 2.0}
