# Test-only trainers, found through nnUNet_extTrainer (see tests/planning/plane_workflow.py).
# Real trainers on the schedule a shared 2-core CPU affords: 1 epoch x 2 iterations and no mirroring
# in the final validation (``_1ep_2it_noTTA``; nnU-Net mirrors every validation patch 4x in 2D, 8x in
# 3D, on the phantom most of a training run). Training and inference are otherwise the trainers' own:
# nnU-Net's default U-Net, our 2D DenseNet coarse model, our cascade fine stages.
from nnunet_iph.trainers import (nnUNetTrainer_1ep_2it_noTTA, nnUNetTrainerCascadeFine_1ep_2it_noTTA,
                                 nnUNetTrainerCascadeFineProb_1ep_2it_noTTA,
                                 nnUNetTrainerDenseNetCoarse_1ep_2it_noTTA)


class nnUNetTrainerTestPlane(nnUNetTrainer_1ep_2it_noTTA):
    pass


class nnUNetTrainerTestCoarse(nnUNetTrainerDenseNetCoarse_1ep_2it_noTTA):
    pass


class nnUNetTrainerTestFine(nnUNetTrainerCascadeFine_1ep_2it_noTTA):
    pass


class nnUNetTrainerTestFineProb(nnUNetTrainerCascadeFineProb_1ep_2it_noTTA):
    pass
