"""The listing of a conversion: subjects as the converters name them, checked before any file is opened.

:func:`plan` turns subjects into entries: case ids, duplicate ids, split values, patients that
would straddle train and test, the test hold-out, and age/sex normalised through
:mod:`nnunet_iph.demographics` (a blanked value gets a note naming the subject and the value).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from nnunet_iph.dataset_conversion.splits import choose_test_patients
from nnunet_iph.demographics import normalize_age, normalize_sex


@dataclass
class Subject:
    """One input scan as listed by a converter, before any file is opened."""

    subject_id: str
    image: str | None
    mask: str | None
    split: str | None = None  # "train", "test", or None (decided by test_fraction)
    patient_id: str | None = None  # grouping for patient-level splits; default: subject_id
    site: str = ""
    meta: dict[str, Any] = field(default_factory=dict)  # age, sex, scanner, phase, flags, extra columns
    source_row: int | str | None = None  # manifest line (for the report)
    case_id: str | None = None  # default: sanitised subject_id
    skip: str | None = None  # defect found while listing -> skipped (fails with strict)
    exclude: str | None = None  # deliberately left out (cohort definition) -> excluded
    expected_slices: tuple[int, ...] | None = None  # z indices with hemorrhage per a slice table
    expected_num_slices: int | None = None


@dataclass
class Entry:
    """Bookkeeping of one subject through the run (becomes one report row)."""

    subject: Subject
    case_id: str
    patient_id: str
    split: str | None = None
    fate: str = ""  # converted | skipped | excluded
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # those notes that are also printed on stderr
    record: dict[str, Any] | None = None
    outputs: dict[str, str] = field(default_factory=dict)  # role -> path relative to the dataset

    def skip(self, reason: str) -> None:
        if self.fate != "skipped":
            self.fate, self.reason = "skipped", reason


def sanitise_case_id(subject_id: str) -> str:
    """nnU-Net-safe case id: letters, digits, '-' and '_' (anything else becomes '_')."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", str(subject_id).strip()).strip("_")


def normalise_demographics(e: Entry) -> None:
    """Sex as F/M, plausible ages only (one level per sex in the analysis); blanked values are noted."""
    meta = e.subject.meta
    for key, normalise in (("age", normalize_age), ("sex", normalize_sex)):
        if key in meta:
            value, note = normalise(meta[key])
            meta[key] = "" if value is None else value
            if note:
                e.notes.append(f"subject {e.subject.subject_id}: {note}")
                e.warnings.append(e.notes[-1])


def plan(subjects: list[Subject], test_fraction: float, seed: int) -> list[Entry]:
    """Case ids, duplicate checks and train/test assignment (no file is opened here)."""
    entries: list[Entry] = []
    for s in subjects:
        sid = str(s.subject_id).strip() if s.subject_id is not None else ""
        case_id = sanitise_case_id(s.case_id if s.case_id else sid)
        e = Entry(s, case_id, str(s.patient_id).strip() if s.patient_id else (case_id or sid))
        e.split = s.split
        normalise_demographics(e)
        if s.exclude:
            e.fate, e.reason = "excluded", s.exclude
        elif s.skip:
            e.skip(s.skip)
        elif not sid:
            e.skip("empty subject_id")
        elif not case_id:
            e.skip(f"subject_id {sid!r} has no letters or digits to build a case id from")
        elif not s.image:
            e.skip("no image path given")
        elif s.split not in (None, "train", "test"):
            e.skip(f"split {s.split!r} is neither 'train' nor 'test'")
        entries.append(e)

    def where(e: Entry) -> str:
        return f"row {e.subject.source_row}" if e.subject.source_row is not None else repr(e.subject.subject_id)

    # duplicates: subject ids, and different subject ids that sanitise to one case id
    live = [e for e in entries if e.fate != "excluded" and str(e.subject.subject_id or "").strip()]
    by_sid: dict[str, list[Entry]] = {}
    for e in live:
        by_sid.setdefault(str(e.subject.subject_id).strip(), []).append(e)
    for sid, es in by_sid.items():
        if len(es) > 1:
            for e in es:
                e.skip(f"duplicate subject_id {sid!r} ({', '.join(where(x) for x in es)}); ids must be unique")
    by_case: dict[str, list[Entry]] = {}
    for e in live:
        if e.case_id:
            by_case.setdefault(e.case_id, []).append(e)
    for cid, es in by_case.items():
        sids = sorted({str(x.subject.subject_id).strip() for x in es})
        if len(sids) > 1:
            for e in es:
                e.skip(f"subject_ids {', '.join(map(repr, sids))} all map to case id {cid!r}")

    # unlabelled scans without an explicit split are test scans
    for e in entries:
        if e.fate == "" and not e.subject.mask:
            if e.split == "train":
                e.skip("no mask given for a training case")
            elif e.split is None:
                e.split = "test"
                e.notes.append("no mask: unlabelled, put in imagesTs")
    # a patient's scans must not straddle train and test
    by_patient: dict[str, list[Entry]] = {}
    for e in entries:
        if e.fate == "":
            by_patient.setdefault(e.patient_id, []).append(e)
    for pid, es in by_patient.items():
        fixed = {e.split for e in es if e.split}
        if len(fixed) > 1:
            for e in es:
                e.skip(f"patient {pid!r} has scans in both train and test ({', '.join(where(x) for x in es)})")
        elif fixed:
            only = next(iter(fixed))
            for e in es:
                if e.split is None:
                    e.split = only
    undecided: dict[str, str] = {}
    for e in entries:
        if e.fate == "" and e.split is None:
            undecided.setdefault(e.patient_id, e.subject.site or "")
    test_patients = choose_test_patients(undecided, test_fraction, seed)
    for e in entries:
        if e.fate == "" and e.split is None:
            e.split = "test" if e.patient_id in test_patients else "train"
    return entries
