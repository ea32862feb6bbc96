"""Brain-restricted copies of a model's validation predictions, for the protocol's ``restrict_to_brain`` rows.

Why copies: the unrestricted predictions stay what nnU-Net wrote (another row may score them), and
the restricted folder records which prediction files it was made from (name, size, mtime): when a
re-trained model rewrites them (or the brain masks are recomputed), the stale copy is detected and
rebuilt instead of being scored.
The copy gets its own nnU-Net ``summary.json`` (nnU-Net's evaluation against the reference labels),
so the protocol's ``metric_source = "summary"`` scores it like any validation folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from nnunet_iph.imageio import write_json

RECORD = "restriction.json"


def _sources(folder: Path, file_ending: str) -> dict[str, list[float]]:
    return {p.name[: -len(file_ending)]: [p.stat().st_size, p.stat().st_mtime]
            for p in sorted(folder.glob(f"*{file_ending}")) if not p.name.startswith(".")}


def restricted_current(source: Path, out: Path, masks: Path, file_ending: str) -> bool:
    """True when ``out`` holds the restriction of exactly the current files of ``source``."""
    record = out / RECORD
    if not record.is_file():
        return False
    rec = json.loads(record.read_text(encoding="utf-8"))
    return (rec.get("source") == str(source) and rec.get("masks") == str(masks)
            and rec.get("files") == _sources(source, file_ending)
            and rec.get("mask_files") == _sources(masks, file_ending))


def restrict_predictions(source: Path, out: Path, masks: Path, references: Path, file_ending: str) -> dict[str, Any]:
    """Copy ``source``'s predictions to ``out``, restrict them to ``masks/<case><file_ending>`` and score
    them against ``references`` with nnU-Net's evaluation."""
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    from nnunet_iph.postprocessing.brain import restrict_folder_in_place

    files = _sources(source, file_ending)
    if not files:
        raise FileNotFoundError(f"{source}: no predictions (*{file_ending}) to restrict to the brain")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for case in files:
        shutil.copy2(source / f"{case}{file_ending}", tmp / f"{case}{file_ending}")
    summary = restrict_folder_in_place(tmp, list(files), file_ending, masks)
    removed = {c: s["removed_outside_brain"] for c, s in summary.items()}
    compute_metrics_on_folder(str(references), str(tmp), str(tmp / "summary.json"), SimpleITKIO(), file_ending,
                              [1], num_processes=1, chill=True)
    write_json({"source": str(source), "masks": str(masks), "files": files, "mask_files": _sources(masks, file_ending),
                "cases": summary}, tmp / RECORD)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return {"cases": len(files), "removed_voxels": int(sum(removed.values())),
            "cases_changed": int(sum(1 for v in removed.values() if v))}
