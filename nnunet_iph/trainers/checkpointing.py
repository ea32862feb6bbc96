"""Checkpoints that are never half-written.

nnU-Net saves ``checkpoint_latest.pth`` in place; a job killed while saving (SLURM time limit,
preemption) leaves a truncated file that ``--c`` cannot load. Saving to a temporary name and
renaming keeps the previous checkpoint until the new one is complete.

The mixin also records the nnunet-iph version: nnU-Net writes every trainer attribute into
``fold_X/debug.json``, which ``nnUNetv2_export_model_to_zip`` packs, so a shared model says which
version trained it (``nnunet-iph predict --model`` compares it with the installed one).
"""

from __future__ import annotations

from nnunet_iph import __version__
from nnunet_iph.imageio import atomic_path


class AtomicCheckpoints:
    """Mixin for ``nnUNetTrainer`` subclasses: ``save_checkpoint`` writes atomically."""

    nnunet_iph_version = __version__

    def save_checkpoint(self, filename: str) -> None:
        if self.local_rank != 0 or self.disable_checkpointing:  # nnU-Net writes nothing then
            return super().save_checkpoint(filename)
        with atomic_path(filename) as tmp:
            super().save_checkpoint(str(tmp))
