"""The reference study's optimiser as an option: Adam, lr 5e-4, ReduceLROnPlateau on the val loss.

nnU-Net's default (every trainer without ``Adam`` in its name): SGD, Nesterov momentum 0.99,
weight decay 3e-5, initial lr 0.01 with polynomial decay (exponent 0.9) over the epochs.
``<Trainer>Adam`` exists for nnUNetTrainerFocalDice and every trainer derived from it, in any module
of :mod:`nnunet_iph.trainers` (and ``<Trainer>Adam_<E>ep_<I>it`` by name).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau

from nnunet_iph.trainer_catalog import ADAM_SUFFIX, adam_description


class PlateauOnValidationLoss:
    """ReduceLROnPlateau driven by nnU-Net's per-epoch validation loss.

    nnU-Net calls ``lr_scheduler.step(current_epoch)`` at every epoch start (right for its poly
    schedule, wrong for a plateau scheduler, which would read the epoch as the monitored value):
    that call is a no-op here and :meth:`observe` feeds the validation loss instead.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, **kwargs: Any):
        self.plateau = ReduceLROnPlateau(optimizer, mode="min", **kwargs)

    def step(self, current_epoch: int | None = None) -> None:
        """Called by nnU-Net with the epoch number: ignored (see class docstring)."""

    def observe(self, validation_loss: float) -> None:
        self.plateau.step(float(validation_loss))


class PaperHyperparametersMixin:
    """Adam (lr 5e-4, no weight decay: Keras' defaults) with ReduceLROnPlateau on the validation
    loss (factor 0.1, patience 10 epochs: Keras' defaults; our study description gives no
    values). Mix in before an nnU-Net trainer. The plateau counters are not checkpointed: ``--c``
    restores the reduced learning rate (it is in the optimizer state) but restarts the patience
    count."""

    paper_lr: float = 5e-4
    adam_weight_decay: float = 0.0
    plateau_factor: float = 0.1
    plateau_patience: int = 10
    plateau_min_lr: float = 0.0

    def configure_optimizers(self):
        self.initial_lr = self.paper_lr
        optimizer = torch.optim.Adam(self.network.parameters(), lr=self.paper_lr,
                                     weight_decay=self.adam_weight_decay)
        scheduler = PlateauOnValidationLoss(optimizer, factor=self.plateau_factor,
                                            patience=self.plateau_patience, min_lr=self.plateau_min_lr)
        return optimizer, scheduler

    def on_validation_epoch_end(self, val_outputs):
        super().on_validation_epoch_end(val_outputs)
        self.lr_scheduler.observe(self.logger.get_value("val_losses", step=-1))


def make_adam_variant(base: type, module: str) -> type:
    """``<base>Adam``: ``base`` with :class:`PaperHyperparametersMixin` (made for every trainer of the
    focal + Dice family by the discovery in :mod:`nnunet_iph.trainers`)."""
    name = f"{base.__name__}{ADAM_SUFFIX}"
    return type(name, (PaperHyperparametersMixin, base), {
        "__module__": module, "__qualname__": name, "__doc__": adam_description(base.__name__)})
