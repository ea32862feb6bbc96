"""Multi-site cohort (ACT-trial style) from a manifest CSV.

Manifest columns: ``subject_id,image,mask,site,age,sex`` (required, in any order) plus optional
``patient_id`` (groups several scans of one patient in the splits), ``split`` (train/test; overrides
``test_fraction`` for the rows that set it), ``scanner``, ``phase``, and any other column (kept in
``cases.csv``). Paths are relative to the CSV file; each is a NIfTI/NRRD/MHA/... file or a folder
holding one DICOM series. An empty ``mask`` marks an unlabelled scan (goes to ``imagesTs``).
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

from nnunet_iph.dataset_conversion.core import ConversionOptions, Subject, run_conversion
from nnunet_iph.dataset_conversion.registry import Converter
from nnunet_iph.dataset_conversion.tables import field_count_problem, resolve_path, unique_columns
from nnunet_iph.inference.model_inputs import InputSteps

REQUIRED_COLUMNS = ("subject_id", "image", "mask", "site", "age", "sex")
SPLIT_VALUES = {"train": "train", "training": "train", "tr": "train",
                "test": "test", "testing": "test", "ts": "test"}


def normalise_split(value: str | None) -> str | None:
    v = (value or "").strip()
    if not v:
        return None
    return SPLIT_VALUES.get(v.lower(), v)


def read_manifest(manifest: str | os.PathLike) -> list[Subject]:
    """Subjects of a manifest CSV; raises for a missing file or missing columns (the whole file is wrong)."""
    path = Path(manifest)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path}: file not found")
    base = path.resolve().parent
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"manifest {path}: is empty") from None
        cols = [c.strip() for c in header]
        lower = unique_columns(cols, path, "manifest")
        missing = [c for c in REQUIRED_COLUMNS if c not in lower]
        if missing:
            raise ValueError(f"manifest {path}: missing required column(s) {', '.join(missing)} "
                             f"(has: {', '.join(cols)})")
        known = set(REQUIRED_COLUMNS) | {"patient_id", "split"}
        subjects = []
        for values in reader:
            line = reader.line_num
            if not any(v.strip() for v in values):
                continue  # blank line
            bad = field_count_problem(values, len(cols), path, "manifest", line)
            if bad:
                subjects.append(Subject(subject_id=(values[lower.index("subject_id")].strip()
                                                    if len(values) > lower.index("subject_id") else ""),
                                        image=None, mask=None, source_row=line, skip=bad))
                continue
            row = {lc: v.strip() for lc, v in zip(lower, values)}
            meta = {"age": row["age"], "sex": row["sex"]}
            for c, lc, v in zip(cols, lower, values):
                if lc not in known and lc not in meta:
                    meta[lc if lc in ("scanner", "phase") else c] = v.strip()
            subjects.append(Subject(
                subject_id=row["subject_id"], image=resolve_path(row["image"], base),
                mask=resolve_path(row["mask"], base), split=normalise_split(row.get("split")),
                patient_id=row.get("patient_id") or None, site=row["site"], meta=meta, source_row=line))
    if not subjects:
        raise ValueError(f"manifest {path}: has a header but no rows")
    return subjects


def convert_multisite(manifest: str | os.PathLike, dataset_id: int, name: str,
                      raw_root: str | os.PathLike | None = None, *, test_fraction: float = 0.0, seed: int = 0,
                      num_workers: int = 1, strict: bool = False, reorient: str | None = None,
                      num_folds: int = 5, split_scheme: str = "kfold", resample_mask: bool = False,
                      geometry_tolerance: float = 1e-3, merge_labels: bool = False,
                      dicom_irregular: str = "error", overwrite: bool = False, progress: bool = True,
                      input_steps: InputSteps | None = None) -> Path:
    """Convert a multi-site manifest into ``raw_root/DatasetNNN_Name`` (``raw_root`` default: ``$nnUNet_raw``).

    ``test_fraction`` holds out that share of patients (stratified by site, seeded) into
    ``imagesTs``/``labelsTs``; a ``split`` column overrides it row by row. Writes ``dataset.json``,
    ``cases.csv``, ``conversion_report.csv``, ``splits_final.json`` (``split_scheme``: ``kfold`` =
    ``num_folds`` patient-level folds stratified by site and hemorrhage size, or ``loso`` =
    leave-one-site-out; both are also written as ``splits_kfold.json``/``splits_loso.json``).
    Copy splits to nnUNet_preprocessed with :func:`~nnunet_iph.dataset_conversion.install_splits`.
    Returns the dataset folder.
    """
    opts = ConversionOptions(reorient=reorient, geometry_tolerance=geometry_tolerance,
                             resample_mask=resample_mask, merge_labels=merge_labels,
                             dicom_irregular=dicom_irregular, input_steps=input_steps or InputSteps())
    return run_conversion(read_manifest(manifest), dataset_id=dataset_id, name=name, raw_root=raw_root,
                          converter="multisite", source=manifest, options=opts, test_fraction=test_fraction,
                          seed=seed, num_workers=num_workers, strict=strict, num_folds=num_folds,
                          split_scheme=split_scheme, overwrite=overwrite, progress=progress,
                          description=f"Multi-site head CT cohort converted from {Path(manifest).name}")


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", metavar="MANIFEST", help="manifest CSV (paths relative to it)")
    p.add_argument("--test-fraction", type=float, default=0.0,
                   help="hold out this share of patients, stratified by site (a split column overrides)")


def _run(args: argparse.Namespace, common: dict) -> Path:
    return convert_multisite(args.src, args.dataset_id, args.name, test_fraction=args.test_fraction, **common)


CONVERTER = Converter("multisite", "manifest CSV subject_id,image,mask,site,age,sex[,...]", _add_arguments, _run,
                      records_demographics=True)
