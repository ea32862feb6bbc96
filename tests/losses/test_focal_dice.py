"""Focal + F-beta Dice loss against values worked out by hand."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nnunet_iph.losses import FocalFBetaLoss  # noqa: E402


def two_voxel_batch():
    """Voxel A: hemorrhage, p=0.75. Voxel B: background, p=0.5. Shape (1, 2, 2, 1)."""
    logits = torch.tensor([[[[0.0], [0.0]], [[math.log(3)], [0.0]]]])
    target = torch.tensor([[[[1], [0]]]])
    return logits, target


def test_dice_term_is_fbeta_of_soft_counts():
    logits, target = two_voxel_batch()
    # TP = 0.75, FP = 0.5, FN = 0.25
    dice = FocalFBetaLoss(focal_weight=0, smooth=0)(logits, target)
    assert dice.item() == pytest.approx(1 - 1.5 / (1.5 + 0.25 + 0.5))
    f2 = FocalFBetaLoss(beta=2, focal_weight=0, smooth=0)(logits, target)
    assert f2.item() == pytest.approx(1 - 3.75 / (3.75 + 4 * 0.25 + 0.5))


def test_focal_term_paper_form_weights_both_by_alpha():
    logits, target = two_voxel_batch()
    pos = -0.25 * 0.25 ** 2 * math.log(0.75)
    neg = -0.25 * 0.5 ** 2 * math.log(0.5)
    focal = FocalFBetaLoss(dice_weight=0)(logits, target)
    assert focal.item() == pytest.approx((pos + neg) / 2, rel=1e-6)


def test_focal_negative_weight_and_gamma():
    logits, target = two_voxel_batch()
    pos = -0.25 * 0.25 ** 3 * math.log(0.75)
    neg = -0.75 * 0.5 ** 3 * math.log(0.5)
    focal = FocalFBetaLoss(dice_weight=0, gamma=3, negative_weight=0.75)(logits, target)
    assert focal.item() == pytest.approx((pos + neg) / 2, rel=1e-6)
    # gamma = 0, alpha weights both: plain BCE scaled by alpha
    bce = FocalFBetaLoss(dice_weight=0, gamma=0, alpha=1.0)(logits, target)
    assert bce.item() == pytest.approx(-(math.log(0.75) + math.log(0.5)) / 2, rel=1e-6)


def test_total_is_sum_of_terms():
    logits, target = two_voxel_batch()
    total = FocalFBetaLoss(smooth=0)(logits, target)
    parts = FocalFBetaLoss(focal_weight=0, smooth=0)(logits, target) + FocalFBetaLoss(dice_weight=0)(logits, target)
    assert total.item() == pytest.approx(parts.item())


def test_all_background_batch():
    target = torch.zeros(2, 1, 4, 4, dtype=torch.long)
    confident = torch.stack([torch.full((2, 4, 4), 20.0), torch.full((2, 4, 4), -20.0)], 1)
    assert FocalFBetaLoss()(confident, target).item() == pytest.approx(0.0, abs=1e-6)
    unsure = torch.zeros(2, 2, 4, 4)  # p = 0.5 everywhere: F = s / (FP + s) ~ 0, loss ~ 1 + focal
    neg = -0.25 * 0.25 * math.log(0.5)
    assert FocalFBetaLoss()(unsure, target).item() == pytest.approx(1 + neg, rel=1e-4)


def test_several_labels_one_vs_rest_and_batch_dice():
    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.normal(size=(2, 3, 5, 5)), dtype=torch.float32)
    target = torch.tensor(rng.integers(0, 3, size=(2, 1, 5, 5)))
    p = torch.softmax(logits, 1).numpy()
    t = target.numpy()[:, 0]
    for batch_dice in (False, True):
        scores = []
        for c in (1, 2):
            g = (t == c).astype(float)
            axes = (0, 1, 2) if batch_dice else (1, 2)
            tp, fp, fn = ((p[:, c] * g).sum(axes), (p[:, c] * (1 - g)).sum(axes), ((1 - p[:, c]) * g).sum(axes))
            scores.append(2 * tp / (2 * tp + fp + fn))
        expected_dice = 1 - np.mean(scores)
        got = FocalFBetaLoss(focal_weight=0, smooth=0, batch_dice=batch_dice)(logits, target).item()
        assert got == pytest.approx(expected_dice, rel=1e-5)
    pc = np.stack([p[:, 1], p[:, 2]], 1)
    g = np.stack([t == 1, t == 2], 1).astype(float)
    focal = -0.25 * ((1 - pc) ** 2 * g * np.log(pc) + pc ** 2 * (1 - g) * np.log(1 - pc))
    assert FocalFBetaLoss(dice_weight=0)(logits, target).item() == pytest.approx(focal.mean(), rel=1e-5)


def test_ignore_label_voxels_do_not_count():
    logits, target = two_voxel_batch()
    target_ign = target.clone()
    target_ign[0, 0, 1, 0] = 2  # voxel B ignored: only voxel A (TP .75, FN .25) remains
    loss = FocalFBetaLoss(smooth=0, ignore_label=2)(logits, target_ign)
    pos = -0.25 * 0.25 ** 2 * math.log(0.75)
    assert loss.item() == pytest.approx(1 - 1.5 / 1.75 + pos, rel=1e-6)


def test_deep_supervision_weighting():
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper

    from nnunet_iph.trainers.focal_dice import deep_supervision_weights

    weights = deep_supervision_weights(3, is_ddp=False, compiled=False)
    np.testing.assert_allclose(weights, [2 / 3, 1 / 3, 0])
    assert deep_supervision_weights(3, is_ddp=True, compiled=False)[-1] > 0
    rng = np.random.default_rng(1)
    outs = [torch.tensor(rng.normal(size=(1, 2, s, s)), dtype=torch.float32) for s in (8, 4, 2)]
    tgts = [torch.tensor(rng.integers(0, 2, size=(1, 1, s, s))) for s in (8, 4, 2)]
    base = FocalFBetaLoss()
    expected = sum(w * base(o, t).item() for w, o, t in zip(weights, outs, tgts))
    assert DeepSupervisionWrapper(base, weights)(outs, tgts).item() == pytest.approx(expected, rel=1e-6)


def test_gradients_flow_and_bad_arguments():
    logits, target = two_voxel_batch()
    logits.requires_grad_(True)
    FocalFBetaLoss()(logits, target).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="beta"):
        FocalFBetaLoss(beta=0)
    with pytest.raises(ValueError, match="background channel"):
        FocalFBetaLoss()(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
