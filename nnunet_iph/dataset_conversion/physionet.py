"""PhysioNet CT-ICH (Hssayeni et al., 75 patients) in its release layout.

``ct_scans/NNN.nii[.gz]``, ``masks/NNN.nii[.gz]``, ``hemorrhage_diagnosis_raw_ct.csv`` (one row per
slice: ``PatientNumber,SliceNumber,Intraventricular,Intraparenchymal,Subarachnoid,Epidural,Subdural,
No_Hemorrhage,Fracture_Yes_No``; ``SliceNumber`` k is array index k-1 along the third image axis),
optional ``Patient_demographics.csv``. The masks merge all subtypes into label 1; subtypes exist only
per slice, so per-patient flags are "any slice of the patient has it".

Cohorts: ``all`` (every patient, label 1 = any ICH) or ``iph`` (patients whose *only* subtype is
intraparenchymal; IPH plus another subtype is excluded because the mask mixes subtypes).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from nnunet_iph.dataset_conversion.core import ConversionOptions, Subject, run_conversion
from nnunet_iph.dataset_conversion.registry import Converter
from nnunet_iph.dataset_conversion.tables import unique_columns
from nnunet_iph.inference.model_inputs import InputSteps

SLICE_TABLE = "hemorrhage_diagnosis_raw_ct.csv"
DEMOGRAPHICS = "Patient_demographics.csv"
#: CSV column -> short flag name used in cases.csv
SUBTYPES = {"Intraventricular": "ivh", "Intraparenchymal": "iph", "Subarachnoid": "sah",
            "Epidural": "edh", "Subdural": "sdh"}
SITE = "AlHilla"
REFERENCE = ("Hssayeni MD et al. Intracranial Hemorrhage Segmentation Using A Deep Convolutional Model. "
             "Data 2020;5(1):14. PhysioNet doi:10.13026/4nae-zg36")


@dataclass
class PatientSlices:
    """Per-patient summary of the per-slice table."""

    slices: set[int] = field(default_factory=set)  # SliceNumber values (1-based)
    hemorrhage: set[int] = field(default_factory=set)  # 0-based z indices with No_Hemorrhage == 0
    subtype_slices: dict[str, int] = field(default_factory=lambda: {v: 0 for v in SUBTYPES.values()})
    fracture_slices: int = 0

    @property
    def subtypes(self) -> list[str]:
        return [k for k, n in self.subtype_slices.items() if n]


def _int(v: str, what: str, path: Path, line: int) -> int:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        raise ValueError(f"{path} line {line}: {what} {v!r} is not a number") from None


def read_slice_table(path: str | os.PathLike) -> dict[int, PatientSlices]:
    """Parse the per-slice table (CRLF tolerated); raises naming the file and line on bad content."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: slice table not found")
    out: dict[int, PatientSlices] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        cols = [c.strip() for c in reader.fieldnames or []]
        unique_columns(cols, path, "slice table")
        need = ["PatientNumber", "SliceNumber", *SUBTYPES, "No_Hemorrhage", "Fracture_Yes_No"]
        missing = [c for c in need if c not in cols]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
        reader.fieldnames = cols
        for row in reader:
            line = reader.line_num
            if None in row or None in row.values():  # DictReader: extra fields under None, missing ones None
                raise ValueError(f"{path} line {line}: has {'more' if None in row else 'fewer'} fields than "
                                 f"the header's {len(cols)}")
            pid = _int(row["PatientNumber"], "PatientNumber", path, line)
            k = _int(row["SliceNumber"], "SliceNumber", path, line)
            if k < 1:
                raise ValueError(f"{path} line {line}: SliceNumber {k} (must be >= 1)")
            ps = out.setdefault(pid, PatientSlices())
            if k in ps.slices:
                raise ValueError(f"{path} line {line}: patient {pid} slice {k} listed twice")
            ps.slices.add(k)
            if _int(row["No_Hemorrhage"], "No_Hemorrhage", path, line) == 0:
                ps.hemorrhage.add(k - 1)
            for col, short in SUBTYPES.items():
                ps.subtype_slices[short] += _int(row[col], col, path, line) > 0
            ps.fracture_slices += _int(row["Fracture_Yes_No"], "Fracture_Yes_No", path, line) > 0
    return out


def read_demographics(path: Path) -> tuple[dict[int, dict[str, str]], str | None]:
    """Age and sex per patient from the release's demographics sheet (two-row header tolerated)."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))
    header_idx = next((i for i, r in enumerate(rows) if r and "patient" in r[0].lower()), None)
    if header_idx is None:
        return {}, f"{path}: no header row starting with 'Patient'; demographics ignored"
    header = [c.strip().lower() for c in rows[header_idx]]
    ages = [i for i, c in enumerate(header) if c.startswith("age")]
    sexes = [i for i, c in enumerate(header) if "gender" in c or c == "sex"]
    for what, found in (("age", ages), ("sex", sexes)):
        if len(found) > 1:
            names = ", ".join(rows[header_idx][i].strip() for i in found)
            raise ValueError(f"{path}: {len(found)} {what} columns ({names}); which one is meant cannot be told")
    age_col = ages[0] if ages else None
    sex_col = sexes[0] if sexes else None
    out = {}
    for r in rows[header_idx + 1:]:
        if not r or not r[0].strip().isdigit():
            continue
        if int(r[0]) in out:  # two rows of one patient: which age/sex is right cannot be told
            raise ValueError(f"{path}: patient {int(r[0])} is listed twice")
        out[int(r[0])] = {"age": r[age_col].strip() if age_col is not None and age_col < len(r) else "",
                          "sex": r[sex_col].strip() if sex_col is not None and sex_col < len(r) else ""}
    return out, None


def _find(folder: Path, pid: int) -> tuple[Path | None, str | None]:
    """The file of patient ``pid`` and, when several exist (``049.nii`` beside ``049.nii.gz``), why
    the patient is skipped: which one is meant cannot be told."""
    found = [p for stem in dict.fromkeys((f"{pid:03d}", str(pid))) for ext in (".nii.gz", ".nii")
             if (p := folder / f"{stem}{ext}").is_file()]
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        return found[0], f"{folder}: {len(found)} files for patient {pid:03d} ({names}); remove all but one"
    return (found[0] if found else None), None


def _listed(folder: Path) -> set[int]:
    ids = set()
    if folder.is_dir():
        for p in folder.iterdir():
            m = re.fullmatch(r"(\d+)\.nii(\.gz)?", p.name)
            if m:
                ids.add(int(m.group(1)))
    return ids


def physionet_subjects(src: str | os.PathLike, cohort: str = "all",
                       iph_include_negatives: bool = False) -> list[Subject]:
    src = Path(src)
    if cohort not in ("all", "iph"):
        raise ValueError(f"cohort {cohort!r}: choose 'all' or 'iph'")
    if not (src / "ct_scans").is_dir():
        raise FileNotFoundError(f"{src}: no ct_scans/ folder (expected the PhysioNet CT-ICH release layout)")
    table = read_slice_table(src / SLICE_TABLE)
    demo: dict[int, dict[str, str]] = {}
    demo_note = None
    if (src / DEMOGRAPHICS).is_file():
        demo, demo_note = read_demographics(src / DEMOGRAPHICS)
    subjects = []
    for pid in sorted(_listed(src / "ct_scans") | set(table)):
        sid = f"{pid:03d}"
        image, image_problem = _find(src / "ct_scans", pid)
        mask, mask_problem = _find(src / "masks", pid)
        mask = mask or (src / "masks" / f"{sid}.nii")  # missing -> reported by the check
        ps = table.get(pid)
        meta: dict[str, object] = {"age": demo.get(pid, {}).get("age", ""), "sex": demo.get(pid, {}).get("sex", "")}
        if ps is not None:
            meta.update({short: int(ps.subtype_slices[short] > 0) for short in SUBTYPES.values()})
            meta.update(any_hemorrhage=int(bool(ps.hemorrhage)), fracture=int(ps.fracture_slices > 0),
                        subtypes="+".join(s.upper() for s in ps.subtypes), table_slices=len(ps.slices),
                        hemorrhage_slices=len(ps.hemorrhage), fracture_slices=ps.fracture_slices,
                        **{f"{short}_slices": n for short, n in ps.subtype_slices.items()})
        s = Subject(subject_id=sid, image=str(image) if image else None, mask=str(mask), site=SITE, meta=meta,
                    source_row=f"patient {sid}")
        if image is None:
            s.skip = f"{src / 'ct_scans'}: no CT file {sid}.nii[.gz] for patient {sid} of {SLICE_TABLE}"
        s.skip = s.skip or image_problem or mask_problem
        if ps is not None:
            s.expected_slices = tuple(sorted(ps.hemorrhage))
            s.expected_num_slices = max(ps.slices) if ps.slices else None
            if ps.slices != set(range(1, len(ps.slices) + 1)):
                s.skip = s.skip or (f"{src / SLICE_TABLE}: patient {sid} slice numbers are not 1..N "
                                    f"(missing {sorted(set(range(1, max(ps.slices) + 1)) - ps.slices)[:10]})")
        if cohort == "iph" and not s.skip:
            if ps is None:
                s.skip = f"patient {sid} is not in {SLICE_TABLE}: subtypes unknown, cannot place in the IPH cohort"
            else:
                other = [t.upper() for t in ps.subtypes if t != "iph"]
                if "iph" in ps.subtypes and other:
                    s.exclude = (f"IPH plus other subtypes ({', '.join(other)}): the mask mixes subtypes, "
                                 f"not an IPH-only reference")
                elif other:
                    s.exclude = f"no intraparenchymal hemorrhage (has {', '.join(other)})"
                elif not ps.subtypes and not ps.hemorrhage:
                    if not iph_include_negatives:
                        s.exclude = "no hemorrhage (pass --iph-include-negatives to keep hemorrhage-free patients)"
                elif not ps.subtypes:
                    s.exclude = "hemorrhage slices without a subtype in the table"
        if ps is None and cohort == "all":
            s.meta["table_note"] = f"not in {SLICE_TABLE}"
        subjects.append(s)
    if demo_note:
        for s in subjects:
            s.meta["demographics_note"] = demo_note
    return subjects


def convert_physionet(src: str | os.PathLike, dataset_id: int, name: str,
                      raw_root: str | os.PathLike | None = None, *, cohort: str = "all",
                      iph_include_negatives: bool = False, test_fraction: float = 0.0, seed: int = 0,
                      num_workers: int = 1, strict: bool = False, reorient: str | None = None,
                      num_folds: int = 5, split_scheme: str = "kfold", resample_mask: bool = False,
                      geometry_tolerance: float = 1e-3, merge_labels: bool = False,
                      dicom_irregular: str = "error", overwrite: bool = False, progress: bool = True,
                      input_steps: InputSteps | None = None) -> Path:
    """Convert the PhysioNet CT-ICH release; per-patient subtype flags go to ``cases.csv``.

    Without reorientation the NIfTI files are copied byte for byte (voxels, header and the
    sheared sform of patient 074 unchanged). Each mask is checked against the slice table
    (slices with hemorrhage; a mismatch is noted in the report).
    """
    opts = ConversionOptions(reorient=reorient, geometry_tolerance=geometry_tolerance,
                             resample_mask=resample_mask, merge_labels=merge_labels,
                             dicom_irregular=dicom_irregular, input_steps=input_steps or InputSteps())
    what = ("IPH-only cohort (patients whose only subtype is intraparenchymal)" if cohort == "iph"
            else "all patients, label 1 = any intracranial hemorrhage")
    return run_conversion(physionet_subjects(src, cohort, iph_include_negatives), dataset_id=dataset_id,
                          name=name, raw_root=raw_root, converter="physionet", source=src, options=opts,
                          test_fraction=test_fraction, seed=seed, num_workers=num_workers, strict=strict,
                          num_folds=num_folds, split_scheme=split_scheme, overwrite=overwrite, progress=progress,
                          description=f"PhysioNet CT-ICH head CT, {what}", reference=REFERENCE,
                          licence="see PhysioNet terms of the version used (CC BY 4.0 up to v1.3.0)",
                          extra_options={"cohort": cohort, "iph_include_negatives": iph_include_negatives})


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", metavar="SRC", help="release folder")
    p.add_argument("--cohort", choices=("all", "iph"), default="all",
                   help="all: every patient, any ICH = label 1 (default); iph: patients whose only "
                        "subtype is intraparenchymal")
    p.add_argument("--iph-include-negatives", action="store_true",
                   help="with --cohort iph: also keep patients without any hemorrhage")
    p.add_argument("--test-fraction", type=float, default=0.0, help="hold out this share of patients")


def _run(args: argparse.Namespace, common: dict) -> Path:
    return convert_physionet(args.src, args.dataset_id, args.name, cohort=args.cohort,
                             iph_include_negatives=args.iph_include_negatives, test_fraction=args.test_fraction,
                             **common)


CONVERTER = Converter("physionet", "PhysioNet CT-ICH: ct_scans/, masks/, hemorrhage_diagnosis_raw_ct.csv",
                      _add_arguments, _run, records_demographics=True)
