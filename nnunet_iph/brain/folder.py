"""``nnunet-iph brain-mask IN OUT``: an intracranial mask per CT file, a CSV, optional QC pictures.

A case that fails (unreadable file) is listed in the CSV with its error and its old mask, if any,
is removed, so no stale mask stays next to the new ones; the command then fails naming the files.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from nnunet_iph.brain.extraction import intracranial_mask
from nnunet_iph.brain.settings import BrainMaskSettings
from nnunet_iph.imageio import InputError, atomic_path, read_image, write_csv, write_image
from nnunet_iph.locking import folder_lock
from nnunet_iph.parallel import run_jobs

CSV_NAME = "brain_masks.csv"
QC_DIR = "qc"
LOCK_NAME = ".brain_mask.lock"
CT_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")
COLUMNS = ["case", "source", "intracranial_ml", "passed_through", "seconds", "warnings", "error"]


def list_ct_files(folder: str | os.PathLike) -> dict[str, Path]:
    """``{case: CT file}``: nnU-Net naming (``CASE_0000``: channel 0 only) or one plain file per case."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: input folder not found")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        ending = next((e for e in CT_ENDINGS if p.name.endswith(e)), None)
        if p.name.startswith(".") or ending is None or not p.is_file():
            continue
        stem = p.name[: -len(ending)]
        m = _CHANNEL.match(stem)
        if m and m["ch"] != "0000":
            continue  # other input channels of nnU-Net naming: not the CT
        case = m["case"] if m else stem
        if case in found:
            raise ValueError(f"{folder}: case {case} has two CT files ({found[case].name}, {p.name})")
        found[case] = p
    if not found:
        raise FileNotFoundError(f"{folder}: no CT files ({', '.join(CT_ENDINGS)})")
    return found


@dataclass(frozen=True)
class _Job:
    case: str
    source: Path
    out_dir: Path
    settings: BrainMaskSettings
    qc: bool
    file_ending: str


def _run_case(job: _Job) -> dict[str, Any]:
    mask_path = job.out_dir / f"{job.case}{job.file_ending}"
    row: dict[str, Any] = {"case": job.case, "source": str(job.source)}
    try:
        image = read_image(job.source, "CT")
        result = intracranial_mask(image, job.settings, case=job.case)
    except (InputError, ValueError) as err:
        mask_path.unlink(missing_ok=True)
        (job.out_dir / QC_DIR / f"{job.case}.png").unlink(missing_ok=True)
        return {**row, "error": str(err)}
    write_image(result.mask, mask_path)
    if job.qc:
        _write_qc(job, image, result)
    return {**row, "intracranial_ml": result.volume_ml, "passed_through": result.passed_through,
            "seconds": round(result.seconds, 3), "warnings": "; ".join(result.warnings), "error": ""}


def _write_qc(job: _Job, image, result) -> None:
    import SimpleITK as sitk

    from nnunet_iph.inference.qc import render_qc

    volume = "passed through" if result.volume_ml is None else f"{result.volume_ml:.0f} mL"
    png = render_qc(sitk.GetArrayViewFromImage(image), sitk.GetArrayViewFromImage(result.mask),
                    image.GetSpacing(), image.GetDirection(), f"{job.case}: intracranial {volume}")
    path = job.out_dir / QC_DIR / f"{job.case}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(png)


def brain_masks(cases: Mapping[str, str | os.PathLike], out_dir: str | os.PathLike,
                settings: BrainMaskSettings = BrainMaskSettings(), qc: bool = False, num_workers: int = 1,
                progress: bool = True, file_ending: str = ".nii.gz") -> pd.DataFrame:
    """``OUT/<case><file_ending>`` and ``OUT/brain_masks.csv`` for ``{case: CT file}``; raises
    ``ValueError`` naming every CT that failed (after writing the CSV, which lists them)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: output exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    jobs = [_Job(case, Path(path), out, settings, qc, file_ending) for case, path in cases.items()]
    with folder_lock(out, out / LOCK_NAME, "another brain-mask run"):
        rows = [row for _, row in run_jobs(_run_case, jobs, num_workers, desc="brain-mask", progress=progress)]
        table = pd.DataFrame(rows).reindex(columns=COLUMNS)
        write_csv(table, out / CSV_NAME)
    failed = table[table["error"].fillna("") != ""]
    if len(failed):
        raise ValueError(f"{len(failed)} of {len(table)} CT file(s) failed (see {out / CSV_NAME}): "
                         + "; ".join(failed["error"]))
    return table


def brain_mask_folder(in_dir: str | os.PathLike, out_dir: str | os.PathLike,
                      settings: BrainMaskSettings = BrainMaskSettings(), qc: bool = False,
                      num_workers: int = 1, progress: bool = True) -> pd.DataFrame:
    """:func:`brain_masks` for every CT of ``in_dir``."""
    cases = list_ct_files(in_dir)
    if Path(out_dir).resolve() == Path(in_dir).resolve():
        raise ValueError(f"{out_dir}: output folder is the input folder; write the masks elsewhere")
    return brain_masks(cases, out_dir, settings, qc, num_workers, progress)
