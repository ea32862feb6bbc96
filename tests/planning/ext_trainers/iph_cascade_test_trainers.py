# Test-only trainers, found through nnUNet_extTrainer (see tests/planning/plane_workflow.py).
# Real trainers with two changes for a shared 2-core CPU: 1 epoch x 2 iterations, and no mirroring
# in the final validation (nnU-Net mirrors every validation patch 4x in 2D, 8x in 3D; on the
# phantom that validation is most of a training run). Training and inference are otherwise the
# trainers' own: nnU-Net's default U-Net, our 2D DenseNet coarse model, our cascade fine stages.
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_iph.trainers import (nnUNetTrainerCascadeFine, nnUNetTrainerCascadeFineProb,
                                 nnUNetTrainerDenseNetCoarse)


class _Fast:
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 1
        self.num_iterations_per_epoch = 2
        self.num_val_iterations_per_epoch = 1

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        out = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return out


class nnUNetTrainerTestPlane(_Fast, nnUNetTrainer):
    pass


class nnUNetTrainerTestCoarse(_Fast, nnUNetTrainerDenseNetCoarse):
    pass


class nnUNetTrainerTestFine(_Fast, nnUNetTrainerCascadeFine):
    pass


class nnUNetTrainerTestFineProb(_Fast, nnUNetTrainerCascadeFineProb):
    pass
