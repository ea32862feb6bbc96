"""``nnUNetv2_train`` with a chosen number of torch threads.

nnU-Net's CLI calls ``torch.set_num_threads(cpu_count())`` for ``-device cpu``. On a shared
machine that is the worst setting: each parallel region waits for the thread that another
process (or a higher-priority job) starves, and a niced training slows down 5-10x. This runs
nnU-Net's own entry point unchanged, with ``torch.set_num_threads`` capped at
``$NNUNET_IPH_TORCH_THREADS`` (unset or 0: nnU-Net's default).

``$NNUNET_IPH_SEED`` (optional) seeds ``random``, numpy and torch first. nnU-Net itself seeds
nothing; with augmentation in the main process (``nnUNet_n_proc_DA=0``, which the benchmark sets
together with the seed) weight initialisation, patch sampling and augmentation then repeat run to run.

    python -m nnunet_iph.benchmarking.nnunet_train DATASET CONFIG FOLD -tr T -p P -device cpu [--c]
"""

from __future__ import annotations

import os
import sys

THREADS_VAR = "NNUNET_IPH_TORCH_THREADS"
SEED_VAR = "NNUNET_IPH_SEED"


def capped_threads(requested: int, cap: int) -> int:
    """Threads to use: ``requested`` limited to ``cap`` (cap <= 0: no limit)."""
    return requested if cap <= 0 else max(1, min(requested, cap))


def main() -> None:
    import torch

    cap = int(os.environ.get(THREADS_VAR, "0") or 0)
    if cap > 0:
        original = torch.set_num_threads

        def set_num_threads(n: int) -> None:
            original(capped_threads(int(n), cap))

        torch.set_num_threads = set_num_threads  # type: ignore[assignment]
        torch.set_num_threads(cap)
    seed = os.environ.get(SEED_VAR, "")
    if seed:
        import random

        import numpy as np

        random.seed(int(seed))
        np.random.seed(int(seed))
        torch.manual_seed(int(seed))
    from nnunetv2.run.run_training import run_training_entry

    sys.argv[0] = "nnUNetv2_train"
    run_training_entry()


if __name__ == "__main__":
    main()
