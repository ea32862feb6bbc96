"""nnU-Net-compatible segmentation networks of the reference studies (1D/2D/3D via ``conv_op``).

Each class can be named in a plans file (``network_class_name``, e.g.
``nnunet_iph.networks.fpn.FPN``) or used through the trainers in :mod:`nnunet_iph.trainers`.
See docs/networks.md.
"""

from nnunet_iph.networks.attention_unet import AttentionUNet
from nnunet_iph.networks.base import SegmentationNetwork
from nnunet_iph.networks.densenet_coarse import DenseNetCoarse
from nnunet_iph.networks.encoders import ENCODERS, build_encoder
from nnunet_iph.networks.fpn import FPN
from nnunet_iph.networks.linknet import LinkNet
from nnunet_iph.networks.resunet import ResUNet
from nnunet_iph.networks.swin_unet import SwinUNet
from nnunet_iph.networks.transunet import TransUNet
from nnunet_iph.networks.unet import UNet
from nnunet_iph.networks.unet_plusplus import UNetPlusPlus
from nnunet_iph.networks.vnet import VNet

NETWORKS = {cls.__name__: cls for cls in (UNet, AttentionUNet, FPN, TransUNet, SwinUNet, UNetPlusPlus,
                                          ResUNet, LinkNet, DenseNetCoarse, VNet)}

__all__ = ["ENCODERS", "NETWORKS", "SegmentationNetwork", "build_encoder", *sorted(NETWORKS)]
