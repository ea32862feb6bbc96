"""nnU-Net's predictor with its network replaced by a recorder: what reaches the network, untrained."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def initialize_without_checkpoint(predictor, folder, configuration: str = "2d") -> None:
    """Set up ``predictor`` from a model folder's plans.json and dataset.json only (no weights)."""
    import torch
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(json.loads((Path(folder) / "plans.json").read_text(encoding="utf-8")))
    ds = json.loads((Path(folder) / "dataset.json").read_text(encoding="utf-8"))
    predictor.manual_initialization(torch.nn.Identity(), pm, pm.get_configuration(configuration), [{}], ds,
                                    "nnUNetTrainer", None)


def record_network_inputs(monkeypatch, configuration: str = "2d") -> list[np.ndarray]:
    """Patch ``nnUNetPredictor`` so that a model folder's checkpoint is never loaded (plans.json and
    dataset.json are) and every array handed to the network is appended to the returned list
    (the network answers background)."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    seen: list[np.ndarray] = []

    def fake_init(self, folder, use_folds, checkpoint_name):
        initialize_without_checkpoint(self, folder, configuration)

    def recorder(self, data):
        seen.append(data.numpy().copy())
        return torch.zeros((self.label_manager.num_segmentation_heads, *data.shape[1:]))

    monkeypatch.setattr(nnUNetPredictor, "initialize_from_trained_model_folder", fake_init)
    monkeypatch.setattr(nnUNetPredictor, "predict_logits_from_preprocessed_data", recorder)
    return seen
