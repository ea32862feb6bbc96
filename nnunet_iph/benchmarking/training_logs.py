"""Numbers from nnU-Net's own training logs: epoch times, pseudo Dice, validation Dice.

Why: the protocol is chosen by seconds per iteration and by how fast the models learn; nnU-Net
already writes both (``training_log_*.txt``, ``validation/summary.json``), so they are read back
rather than measured a second time.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

EPOCH_TIME = re.compile(r"Epoch time: ([0-9.]+) s")
PSEUDO_DICE = re.compile(r"Pseudo dice \[(.*)\]")
EPOCH = re.compile(r": Epoch (\d+)\s*$", re.MULTILINE)


def parse_training_log(text: str) -> dict[str, Any]:
    """Epoch times (s) and pseudo Dice per finished epoch, in log order."""
    times = [float(m) for m in EPOCH_TIME.findall(text)]
    dice = []
    for m in PSEUDO_DICE.findall(text):
        values = re.findall(r"[-+]?\d*\.\d+(?:[eE][-+]?\d+)?|[-+]?\d+(?:[eE][-+]?\d+)?", m.replace("np.float32", ""))
        dice.append([float(v) for v in values])
    epochs = [int(m) for m in EPOCH.findall(text)]
    return {"epoch_times_s": times, "pseudo_dice": dice, "epochs_started": epochs}


def fold_training_summary(fold_dir: str | Path, iterations_per_epoch: int | None = None) -> dict[str, Any]:
    """Epochs, median epoch time, s/iteration (training + validation iterations), last pseudo Dice, validation Dice."""
    fold_dir = Path(fold_dir)
    times: list[float] = []
    pseudo: list[list[float]] = []
    for log in sorted(fold_dir.glob("training_log_*.txt")):
        parsed = parse_training_log(log.read_text(encoding="utf-8", errors="replace"))
        times += parsed["epoch_times_s"]
        pseudo += parsed["pseudo_dice"]
    out: dict[str, Any] = {"epochs_logged": len(times)}
    if times:
        ordered = sorted(times)
        out["median_epoch_s"] = ordered[len(ordered) // 2]
        out["total_epoch_s"] = round(sum(times), 1)
        if iterations_per_epoch:
            out["s_per_iteration"] = round(out["median_epoch_s"] / iterations_per_epoch, 3)
    if pseudo:
        out["last_pseudo_dice"] = pseudo[-1]
    summary = fold_dir / "validation" / "summary.json"
    if summary.is_file():
        data = json.loads(summary.read_text(encoding="utf-8"))
        out["validation_dice_nnunet"] = data.get("foreground_mean", {}).get("Dice")
    return out
