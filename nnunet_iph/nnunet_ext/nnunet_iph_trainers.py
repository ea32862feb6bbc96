# Shim loaded by nnU-Net from $nnUNet_extTrainer: the real trainers live in nnunet_iph.trainers.
from nnunet_iph.trainers import *  # noqa: F401,F403
from nnunet_iph.trainers import __getattr__  # noqa: F401  (schedule variants such as X_2ep_5it)
