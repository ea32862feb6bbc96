"""Checkpoints that are never half-written.

nnU-Net saves ``checkpoint_latest.pth`` in place; a job killed while saving (SLURM time limit,
preemption) leaves a truncated file that ``--c`` cannot load. Saving to a temporary name and
renaming keeps the previous checkpoint until the new one is complete.
"""

from __future__ import annotations

from nnunet_iph.imageio import atomic_path


class AtomicCheckpoints:
    """Mixin for ``nnUNetTrainer`` subclasses: ``save_checkpoint`` writes atomically."""

    def save_checkpoint(self, filename: str) -> None:
        if self.local_rank != 0 or self.disable_checkpointing:  # nnU-Net writes nothing then
            return super().save_checkpoint(filename)
        with atomic_path(filename) as tmp:
            super().save_checkpoint(str(tmp))
