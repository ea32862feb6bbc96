"""nnU-Net's name of a trained model folder, ``TRAINER__PLANS__CONFIGURATION``, split into its parts."""

from __future__ import annotations


class ModelIdentifier:
    """Mixin: ``trainer``, ``plans_name`` and ``configuration`` of ``self.identifier``."""

    identifier: str

    @property
    def trainer(self) -> str:
        return self.identifier.split("__")[0]

    @property
    def plans_name(self) -> str:
        return self.identifier.split("__")[1]

    @property
    def configuration(self) -> str:
        return self.identifier.split("__")[2]
