"""Focal + F-beta Dice loss of the reference study (MIDL 2026, eqs. 1 and 2).

The study trained with ``segmentation_models``' ``DiceLoss + BinaryFocalLoss``. Written for
nnU-Net's softmax networks: every foreground label is scored one-vs-rest against the rest.

Eq. 1 (F-beta "Dice"), per foreground label, soft counts from probabilities ``p`` and one-hot ``g``::

    F_beta = ((1 + b^2) TP + s) / ((1 + b^2) TP + b^2 FN + FP + s),  loss = 1 - F_beta
    TP = sum p g,  FN = sum (1 - p) g,  FP = sum p (1 - g)

``b = 1`` is the Dice coefficient; ``b > 1`` weights recall (missed hemorrhage) more.

Eq. 2 (binary focal loss) *as printed* weights both terms by alpha::

    FL = -alpha (1 - p)^gamma g log p  -  alpha p^gamma (1 - g) log(1 - p)

(this is also what ``segmentation_models`` implements). The RetinaNet / torchvision / MONAI form
weights negatives by ``1 - alpha`` instead: pass ``negative_weight=1 - alpha`` for it. With the
printed form the loss is simply scaled by alpha; with ``1 - alpha = 0.75`` background voxels,
which dominate head CT, get three times the weight of hemorrhage voxels.
"""

from __future__ import annotations

import torch
from torch import nn

_LOG_EPS = 1e-7  # clamp of 1 - p inside log, as segmentation_models' K.epsilon()


def fbeta_scores(probs: torch.Tensor, onehot: torch.Tensor, valid: torch.Tensor, beta: float,
                 smooth: float, batch_dice: bool, ddp: bool = False) -> torch.Tensor:
    """Soft F-beta per foreground channel (and per sample unless ``batch_dice``)."""
    axes = tuple(range(2, probs.ndim))
    tp = (probs * onehot * valid).sum(axes)
    fp = (probs * (1 - onehot) * valid).sum(axes)
    fn = ((1 - probs) * onehot * valid).sum(axes)
    if batch_dice:
        if ddp:
            from nnunetv2.utilities.ddp_allgather import AllGatherGrad
            tp, fp, fn = (AllGatherGrad.apply(t).sum(0) for t in (tp, fp, fn))
        tp, fp, fn = tp.sum(0), fp.sum(0), fn.sum(0)
    b2 = beta * beta
    return ((1 + b2) * tp + smooth) / ((1 + b2) * tp + b2 * fn + fp + smooth)


def binary_focal_terms(log_p: torch.Tensor, probs: torch.Tensor, onehot: torch.Tensor, alpha: float,
                       gamma: float, negative_weight: float) -> torch.Tensor:
    """Voxel-wise focal loss of eq. 2 (``log_p`` from log-softmax for a stable positive term)."""
    log_1mp = torch.log(torch.clamp(1 - probs, min=_LOG_EPS))
    positive = -alpha * (1 - probs) ** gamma * onehot * log_p
    negative = -negative_weight * probs ** gamma * (1 - onehot) * log_1mp
    return positive + negative


class FocalFBetaLoss(nn.Module):
    """``dice_weight * (1 - mean F_beta) + focal_weight * mean focal`` over foreground labels.

    Inputs are nnU-Net's: logits ``(B, C, ...)`` with C = background + labels, and an integer
    label map ``(B, 1, ...)``. Voxels equal to ``ignore_label`` count in neither term.
    """

    def __init__(self, beta: float = 1.0, alpha: float = 0.25, gamma: float = 2.0,
                 negative_weight: float | None = None, dice_weight: float = 1.0,
                 focal_weight: float = 1.0, batch_dice: bool = False, smooth: float = 1e-5,
                 ignore_label: int | None = None, ddp: bool = False) -> None:
        super().__init__()
        if beta <= 0 or gamma < 0 or not 0 <= alpha <= 1:
            raise ValueError(f"need beta > 0, gamma >= 0, 0 <= alpha <= 1; got {beta=}, {gamma=}, {alpha=}")
        self.beta, self.alpha, self.gamma = beta, alpha, gamma
        self.negative_weight = alpha if negative_weight is None else negative_weight
        self.dice_weight, self.focal_weight = dice_weight, focal_weight
        self.batch_dice, self.smooth, self.ignore_label, self.ddp = batch_dice, smooth, ignore_label, ddp

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] < 2:
            raise ValueError("FocalFBetaLoss expects softmax logits with a background channel (C >= 2)")
        target = target[:, 0].long() if target.ndim == logits.ndim else target.long()
        if self.ignore_label is not None:
            valid = (target != self.ignore_label).unsqueeze(1).to(logits.dtype)
            target = torch.where(target == self.ignore_label, torch.zeros_like(target), target)
        else:
            valid = torch.ones_like(logits[:, :1])
        log_probs = torch.log_softmax(logits.float(), 1)[:, 1:]
        probs = log_probs.exp()
        onehot = torch.stack([target == c for c in range(1, logits.shape[1])], 1).to(probs.dtype)

        loss = logits.new_zeros((), dtype=torch.float32)
        if self.dice_weight:
            scores = fbeta_scores(probs, onehot, valid, self.beta, self.smooth, self.batch_dice, self.ddp)
            loss = loss + self.dice_weight * (1 - scores.mean())
        if self.focal_weight:
            focal = binary_focal_terms(log_probs, probs, onehot, self.alpha, self.gamma, self.negative_weight)
            n_valid = valid.sum().clamp(min=1) * onehot.shape[1]
            loss = loss + self.focal_weight * (focal * valid).sum() / n_valid
        return loss
