"""Loss functions for nnU-Net trainers (logits + integer label maps in, scalar out)."""

from nnunet_iph.losses.focal_dice import FocalFBetaLoss, binary_focal_terms, fbeta_scores

__all__ = ["FocalFBetaLoss", "binary_focal_terms", "fbeta_scores"]
