"""A manifest of some subjects of the session's phantom cohort, with absolute paths (a dataset of its own)."""

from __future__ import annotations

import csv
from pathlib import Path


def subset_manifest(cohort: Path, subjects: tuple[str, ...], target: Path) -> Path:
    """``target``: the rows of ``subjects`` of the cohort manifest, image and mask paths made absolute."""
    with open(cohort, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["subject_id"] in subjects]
    assert [r["subject_id"] for r in rows] == list(subjects), "subjects missing from the cohort"
    with open(target, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({**r, "image": str(cohort.parent / r["image"]), "mask": str(cohort.parent / r["mask"])}
                    for r in rows)
    return target
