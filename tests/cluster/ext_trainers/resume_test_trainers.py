# Test-only trainer, found through nnUNet_extTrainer (the experiment's ext_trainer_dirs): long enough
# to be cancelled mid-training (8 epochs x 2 iterations), with a checkpoint_latest.pth after every
# epoch (save_every = 1), written atomically like every schedule variant's checkpoints.
from nnunet_iph.trainers import nnUNetTrainer_8ep_2it


class nnUNetTrainerResumeTest(nnUNetTrainer_8ep_2it):
    def on_train_start(self):
        self.save_every = 1  # nnU-Net's __init__ sets 50
        super().on_train_start()
