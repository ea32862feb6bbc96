# Test-only trainer, found through nnUNet_extTrainer (the experiment's ext_trainer_dirs): long enough
# to be cancelled mid-training, with a checkpoint_latest.pth after every epoch (save_every = 1).
import os

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainerResumeTest(nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 8
        self.num_iterations_per_epoch = 2
        self.num_val_iterations_per_epoch = 1
        self.save_every = 1

    def save_checkpoint(self, filename: str) -> None:
        # write then rename: a job killed while saving must not leave a truncated checkpoint behind
        tmp = f"{filename}.tmp"
        super().save_checkpoint(tmp)
        if os.path.isfile(tmp):
            os.replace(tmp, filename)
