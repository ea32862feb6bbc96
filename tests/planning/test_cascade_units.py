"""Cascade pieces without training: plans wiring, coarse-probability channel, transforms."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

RESAMPLE = {"resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None}}
ARCH = {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet", "arch_kwargs": {},
        "_kw_requires_import": []}


def _plans(forward, spacing):
    backward = [forward.index(i) for i in range(3)]
    return {"plans_name": "p", "transpose_forward": forward, "transpose_backward": backward,
            "configurations": {"3d_fine": {"spacing": spacing, "architecture": ARCH, **RESAMPLE}}}


def test_coarse_probabilities_follow_transpose_and_crop_exactly():
    from nnunet_iph.planning.cascade import probabilities_to_fine_grid

    rng = np.random.default_rng(0)
    probs = rng.random((2, 10, 12, 14)).astype(np.float32)
    probs[0] = 1 - probs[1]
    props = {"spacing": [3.0, 1.0, 1.0], "bbox_used_for_cropping": [[1, 11], [0, 10], [2, 14]]}
    out = probabilities_to_fine_grid(probs, props, _plans([1, 0, 2], [1.0, 3.0, 1.0]), "3d_fine", (10, 10, 12))
    expected = probs[1].transpose(1, 0, 2)[1:11, 0:10, 2:14]
    np.testing.assert_array_equal(out, expected)


def test_coarse_probabilities_are_resampled_to_the_fine_grid():
    from nnunet_iph.planning.cascade import probabilities_to_fine_grid, quantize

    probs = np.zeros((2, 8, 8, 8), np.float32)
    probs[1, 2:6, 2:6, 2:6] = 1.0
    probs[0] = 1 - probs[1]
    props = {"spacing": [2.0, 2.0, 2.0], "bbox_used_for_cropping": [[0, 8]] * 3}
    out = probabilities_to_fine_grid(probs, props, _plans([0, 1, 2], [1.0, 1.0, 1.0]), "3d_fine", (16, 16, 16))
    assert out.shape == (16, 16, 16) and 0 <= out.min() and out.max() <= 1
    assert out.sum() == pytest.approx(probs[1].sum() * 8, rel=0.1)
    q = quantize(out)
    assert q.dtype == np.uint8 and q.max() == 10 and len(np.unique(q)) > 2


def test_probability_transforms_replace_the_one_hot_cascade_input():
    from batchgeneratorsv2.transforms.nnunet.seg_to_onehot import MoveSegAsOneHotToDataTransform
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_iph.trainers.cascade import MoveSegAsProbabilityToDataTransform, nnUNetTrainerCascadeFineProb

    tr = nnUNetTrainerCascadeFineProb.get_training_transforms(
        (16, 16, 16), (0, 0), None, (0, 1, 2), False, is_cascaded=True, foreground_labels=[1])
    names = [type(getattr(t, "transform", t)).__name__ for t in tr.transforms]
    assert "MoveSegAsProbabilityToDataTransform" in names and "MoveSegAsOneHotToDataTransform" not in names
    assert "ApplyRandomBinaryOperatorTransform" not in names
    default = nnUNetTrainer.get_validation_transforms(None, is_cascaded=True, foreground_labels=[1])
    assert any(isinstance(t, MoveSegAsOneHotToDataTransform) for t in default.transforms)

    seg = torch.stack([torch.zeros(4, 4, dtype=torch.int16), torch.arange(16, dtype=torch.int16).reshape(4, 4) % 11])
    out = MoveSegAsProbabilityToDataTransform(1)(image=torch.ones(1, 4, 4), segmentation=seg)
    assert out["image"].shape == (2, 4, 4) and out["segmentation"].shape == (1, 4, 4)
    torch.testing.assert_close(out["image"][1], (torch.arange(16).reshape(4, 4) % 11).float() / 10)


def test_cascade_plans_need_the_source_configurations(nnunet_dirs):
    from nnunet_iph.planning.cascade import CascadeLayout, write_cascade_plans

    folder = nnunet_dirs["nnUNet_preprocessed"] / "Dataset563_Only2d"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "nnUNetPlans.json").write_text(json.dumps(
        {"plans_name": "nnUNetPlans", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
         "configurations": {"2d": {"spacing": [1.0, 1.0], "architecture": ARCH}}}))
    with pytest.raises(ValueError, match="no configuration.*3d_fullres.*2D fine stage"):
        write_cascade_plans(563)
    path = write_cascade_plans(563, CascadeLayout(fine_3d=None, fine_2d="2d_fine"), coarse_trainer="T")
    cfg = json.loads(path.read_text(encoding="utf-8"))["configurations"]
    assert cfg["2d_coarse"]["next_stage"] == ["2d_fine"]
    assert cfg["2d_fine"] == {"inherits_from": "2d", "previous_stage": "2d_coarse", "previous_stage_trainer": "T"}
