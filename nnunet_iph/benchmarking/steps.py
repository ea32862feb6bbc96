"""Resumable steps: each step is skipped when its outputs exist; wall times are recorded.

Why: a 90-minute CPU run or a week of GPU jobs gets interrupted. Every step of a benchmark knows
which files prove it finished (``done``), so a re-run continues where the last one stopped
(trainings themselves resume from nnU-Net's checkpoints inside their step). The state file keeps,
per step, the wall time of every attempt, so the reported times are honest across interruptions.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from nnunet_iph.imageio import write_json


@dataclass
class Step:
    name: str
    run: Callable[[], dict[str, Any] | None]
    done: Callable[[], bool]
    outputs: Sequence[str | Path] = field(default_factory=tuple)  # shown when the step fails to produce them


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class StepRunner:
    """Runs steps in order, skipping finished ones, recording attempts in a JSON state file."""

    def __init__(self, state_file: str | Path, progress: bool = True, log: Callable[[str], None] = print):
        self.state_file = Path(state_file)
        self.progress = progress
        self.log = log
        self.state: dict[str, Any] = {"steps": {}}
        if self.state_file.is_file():
            try:
                self.state = json.loads(self.state_file.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise ValueError(f"{self.state_file}: corrupt state file ({err}); delete it to start the "
                                 "bookkeeping afresh (finished outputs are still skipped)") from None
            self.state.setdefault("steps", {})

    def record(self, name: str) -> dict[str, Any]:
        return self.state["steps"].setdefault(name, {"attempts": []})

    def save(self) -> None:
        write_json(self.state, self.state_file)

    def run(self, steps: Sequence[Step]) -> dict[str, str]:
        """Run every unfinished step; return ``{name: 'skipped'|'done'}``. A failing step raises."""
        from tqdm import tqdm

        status: dict[str, str] = {}
        bar = tqdm(steps, desc="benchmark", unit="step", disable=not self.progress)
        for step in bar:
            bar.set_postfix_str(step.name[:60])
            rec = self.record(step.name)
            if step.done():
                rec["status"] = "done"
                status[step.name] = "skipped"
                continue
            attempt: dict[str, Any] = {"started": _now()}
            rec["attempts"].append(attempt)
            rec["status"] = "running"
            self.save()
            self.log(f"[{_now()}] {step.name} ...")
            t0 = time.perf_counter()
            try:
                info = step.run()
            except BaseException as err:
                attempt.update(wall_s=round(time.perf_counter() - t0, 2), finished=_now(),
                               error=f"{type(err).__name__}: {err}"[:2000])
                rec["status"] = "failed"
                self.save()
                raise
            attempt.update(wall_s=round(time.perf_counter() - t0, 2), finished=_now())
            if info:
                attempt["info"] = info
            if not step.done():
                rec["status"] = "failed"
                self.save()
                missing = ", ".join(str(o) for o in step.outputs) or "(see the step's log)"
                raise RuntimeError(f"step {step.name!r} ran but its outputs are missing: {missing}")
            rec["status"] = "done"
            self.save()
            status[step.name] = "done"
            self.log(f"[{_now()}] {step.name}: {attempt['wall_s']:.0f} s")
        return status
