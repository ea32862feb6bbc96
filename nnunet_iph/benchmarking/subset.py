"""A cohort subset of the PhysioNet CT-ICH release, in the release's own layout, made of links.

Why: the CPU protocol trains on every hemorrhage-positive scan plus a seeded handful of negatives
(the converter takes a release folder, and the data must never be copied). The subset folder holds
symbolic links to the chosen ``ct_scans/`` and ``masks/`` files and the slice table restricted to
those patients (byte-identical rows, the release's CRLF line ends), so ``convert physionet`` reads it
exactly like the release. Which patients are chosen depends only on the slice table and the seed.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from nnunet_iph.imageio import atomic_path, write_json

SLICE_TABLE = "hemorrhage_diagnosis_raw_ct.csv"
SELECTION_FILE = "selection.json"


def _draw(ids: list[int], n: int | None, rng: random.Random) -> list[int]:
    ids = sorted(ids)
    return ids if n is None or n >= len(ids) else rng.sample(ids, n)


def select_patients(positive: list[int], negative: list[int], negatives: int | None, seed: int,
                    positives: int | None = None) -> list[int]:
    """``negatives`` negatives (None: all) drawn with ``random.Random(seed)``, plus every positive
    patient (or ``positives`` of them, drawn after the negatives with the same generator: quick tests)."""
    rng = random.Random(seed)
    chosen = _draw(negative, negatives, rng)
    return sorted(set(_draw(positive, positives, rng)) | set(chosen))


def patient_groups(src: Path) -> tuple[list[int], list[int]]:
    """(positive, negative) patient numbers from the release's slice table."""
    from nnunet_iph.dataset_conversion.physionet import read_slice_table

    table_path = src / SLICE_TABLE
    if not table_path.is_file():
        raise FileNotFoundError(f"{table_path}: slice table not found (expected the PhysioNet CT-ICH release layout)")
    table = read_slice_table(table_path)
    positive = sorted(p for p, s in table.items() if s.hemorrhage)
    negative = sorted(p for p, s in table.items() if not s.hemorrhage)
    return positive, negative


def _source_file(folder: Path, pid: int) -> Path:
    for name in (f"{pid:03d}.nii.gz", f"{pid:03d}.nii", f"{pid}.nii.gz", f"{pid}.nii"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder}: no file for patient {pid:03d} ({pid:03d}.nii[.gz]) although {SLICE_TABLE} "
                            "lists it")


def filter_slice_table(data: bytes, keep: set[int], path: Path) -> bytes:
    """The table's header and the rows of ``keep``, byte for byte (line ends preserved)."""
    lines = data.splitlines(keepends=True)
    if not lines:
        raise ValueError(f"{path}: empty slice table")
    out = [lines[0]]
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        head = line.split(b",", 1)[0].strip()
        if not head.isdigit():
            raise ValueError(f"{path}: line {n}: PatientNumber {head!r} is not an integer")
        if int(head) in keep:
            out.append(line)
    return b"".join(out)


def make_subset(src: str | os.PathLike, dst: str | os.PathLike, negatives: int | None, seed: int,
                positives: int | None = None) -> dict:
    """Write the subset folder ``dst`` (links + filtered table); return the selection record.

    Re-running with the same arguments leaves ``dst`` unchanged; another selection replaces the links.
    """
    src, dst = Path(src).resolve(), Path(dst)
    if not (src / "ct_scans").is_dir() or not (src / "masks").is_dir():
        raise FileNotFoundError(f"{src}: expected the PhysioNet CT-ICH release layout (ct_scans/, masks/, {SLICE_TABLE})")
    positive, negative = patient_groups(src)
    keep = select_patients(positive, negative, negatives, seed, positives)
    for sub in ("ct_scans", "masks"):
        folder = dst / sub
        folder.mkdir(parents=True, exist_ok=True)
        wanted = {}
        for pid in keep:
            target = _source_file(src / sub, pid)
            wanted[target.name] = target
        for existing in folder.iterdir():
            if existing.name not in wanted or not existing.is_symlink() or existing.resolve() != wanted[existing.name]:
                existing.unlink()
        for name, target in wanted.items():
            if not (folder / name).is_symlink():
                (folder / name).symlink_to(target)
    table = filter_slice_table((src / SLICE_TABLE).read_bytes(), set(keep), src / SLICE_TABLE)
    if not (dst / SLICE_TABLE).is_file() or (dst / SLICE_TABLE).read_bytes() != table:
        with atomic_path(dst / SLICE_TABLE) as tmp:
            tmp.write_bytes(table)
    pos = sorted(set(keep) & set(positive))
    record = {"source": str(src), "negatives_requested": "all" if negatives is None else negatives,
              "positives_requested": "all" if positives is None else positives, "seed": seed,
              "positive": [f"{p:03d}" for p in pos], "negative": [f"{p:03d}" for p in sorted(set(keep) - set(pos))],
              "n_positive": len(pos), "n_negative": len(keep) - len(pos), "n_total": len(keep)}
    write_json(record, dst / SELECTION_FILE)
    return record
