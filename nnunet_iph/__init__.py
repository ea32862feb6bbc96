"""nnunet-iph: nnU-Net v2 extension for intracranial hemorrhage segmentation on head CT."""

__version__ = "0.1.0"
