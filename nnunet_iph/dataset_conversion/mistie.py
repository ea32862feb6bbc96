"""MISTIE-style trial (minimally invasive ICH evacuation): a CSV of scans from a multi-centre trial.

CSV columns: ``scan_id`` (or ``subject_id``), ``phase``, ``image`` (required); ``patient_id``
(groups the scans of a patient; default the scan id), ``mask``, ``site``, ``scanner``, ``age``,
``sex`` and any other column (kept in ``cases.csv``). Phase II scans are the training set, phase III
scans the test set (``imagesTs``/``labelsTs``). Images and masks are DICOM series folders (gantry tilt
and non-uniform slice spacing are detected: see ``dicom_irregular``) or NIfTI files; paths are relative
to the CSV.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
from pathlib import Path

from nnunet_iph.dataset_conversion.core import ConversionOptions, Subject, run_conversion
from nnunet_iph.dataset_conversion.registry import Converter
from nnunet_iph.dataset_conversion.tables import field_count_problem, resolve_path, unique_columns
from nnunet_iph.inference.model_inputs import InputSteps

PHASES = {"II": "train", "2": "train", "III": "test", "3": "test"}


def normalise_phase(value: str) -> str:
    v = re.sub(r"^phase\s*", "", (value or "").strip(), flags=re.I).upper()
    return v


def mistie_subjects(table: str | os.PathLike) -> list[Subject]:
    path = Path(table)
    if not path.is_file():
        raise FileNotFoundError(f"scan table {path}: file not found")
    base = path.resolve().parent
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        cols = [c.strip() for c in next(reader, [])]
        lower = unique_columns(cols, path, "scan table")
        id_col = "scan_id" if "scan_id" in lower else ("subject_id" if "subject_id" in lower else None)
        missing = [c for c, ok in (("scan_id (or subject_id)", id_col), ("phase", "phase" in lower),
                                   ("image", "image" in lower)) if not ok]
        if missing:
            raise ValueError(f"scan table {path}: missing required column(s) {', '.join(missing)} "
                             f"(has: {', '.join(cols)})")
        known = {id_col, "phase", "image", "mask", "patient_id", "site"}
        subjects = []
        for values in reader:
            line = reader.line_num
            if not any(v.strip() for v in values):
                continue
            bad = field_count_problem(values, len(cols), path, "scan table", line)
            if bad:
                idx = lower.index(id_col)
                subjects.append(Subject(subject_id=values[idx].strip() if idx < len(values) else "", image=None,
                                        mask=None, source_row=line, skip=bad))
                continue
            row = {lc: v.strip() for lc, v in zip(lower, values)}
            phase = normalise_phase(row.get("phase", ""))
            meta = {"age": row.get("age", ""), "sex": row.get("sex", ""), "scanner": row.get("scanner", ""),
                    "phase": phase}
            for c, lc in zip(cols, lower):
                if lc not in known and lc not in meta:
                    meta[c] = row[lc]
            s = Subject(subject_id=row[id_col], image=resolve_path(row.get("image"), base),
                        mask=resolve_path(row.get("mask"), base), split=PHASES.get(phase),
                        patient_id=row.get("patient_id") or None, site=row.get("site", ""), meta=meta,
                        source_row=line)
            if phase not in PHASES:
                s.skip = (f"scan table {path} line {line}: phase {row.get('phase', '')!r} is neither II "
                          f"(training) nor III (test)")
            subjects.append(s)
    if not subjects:
        raise ValueError(f"scan table {path}: has no rows")
    return subjects


def convert_mistie(table: str | os.PathLike, dataset_id: int, name: str,
                   raw_root: str | os.PathLike | None = None, *, seed: int = 0, num_workers: int = 1,
                   strict: bool = False, reorient: str | None = None, num_folds: int = 5,
                   split_scheme: str = "kfold", resample_mask: bool = False, geometry_tolerance: float = 1e-3,
                   merge_labels: bool = False, dicom_irregular: str = "error", overwrite: bool = False,
                   progress: bool = True,
                   input_steps: InputSteps | None = None) -> Path:
    """Convert a MISTIE-style scan table: phase II -> imagesTr/labelsTr, phase III -> imagesTs/labelsTs."""
    opts = ConversionOptions(reorient=reorient, geometry_tolerance=geometry_tolerance,
                             resample_mask=resample_mask, merge_labels=merge_labels,
                             dicom_irregular=dicom_irregular, input_steps=input_steps or InputSteps())
    return run_conversion(mistie_subjects(table), dataset_id=dataset_id, name=name, raw_root=raw_root,
                          converter="mistie", source=table, options=opts, seed=seed, num_workers=num_workers,
                          strict=strict, num_folds=num_folds, split_scheme=split_scheme, overwrite=overwrite,
                          progress=progress,
                          description="MISTIE-style ICH trial: phase II scans = training, phase III = test")


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", metavar="CSV",
                   help="scan table: scan_id,patient_id,phase,site,scanner,age,sex,image,mask")


def _run(args: argparse.Namespace, common: dict) -> Path:
    return convert_mistie(args.src, args.dataset_id, args.name, **common)


CONVERTER = Converter("mistie", "MISTIE-style trial CSV (phase II -> train, III -> test)", _add_arguments, _run,
                      records_demographics=True)
