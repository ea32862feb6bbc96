"""What a conversion writes besides the images: per-case state, cases.csv, the report, splits, dataset.json.

The per-case state (``.nnunet_iph/cases/<case>.json``: source fingerprint, options, outputs) lets a
re-run skip unchanged cases. Every table is written atomically and only when its content changes,
so a re-run of an unchanged source leaves the folder byte- and mtime-identical.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

from nnunet_iph import __version__
from nnunet_iph.dataset_conversion.case import FILE_ENDING, ConversionOptions
from nnunet_iph.dataset_conversion.listing import Entry
from nnunet_iph.dataset_conversion.sources import source_fingerprint
from nnunet_iph.dataset_conversion.splits import SPLIT_FILES, SplitCase, kfold_splits, loso_splits
from nnunet_iph.imageio import atomic_path, write_json
from nnunet_iph.inference.model_inputs import DATASET_KEY as INPUT_STEPS_KEY

#: bump when the conversion of a case changes, so that re-runs redo old outputs
ENGINE_VERSION = 2  # 2: checks run on the staged copy, CT-units warnings
META_DIR = ".nnunet_iph"
SOURCE_FILE = "source.json"  # which converter and source the dataset holds
BRAIN_MASK_DIR = "brainmasks"  # --brain-mask: <case>.nii.gz beside imagesTr (nnU-Net reads none of it)
#: cases.csv columns of --brain-mask (after the fixed ones)
BRAIN_COLUMNS = ["brain_mask_file", "intracranial_ml", "brain_passed_through", "brain_fill",
                 "hemorrhage_outside_brain_voxels", "hemorrhage_outside_brain_ml"]
#: columns of cases.csv that come first, in this order; converter metadata follows
CASE_COLUMNS = ["case_id", "subject_id", "patient_id", "split", "fold", "site", "age", "sex", "scanner",
                "phase", "volume_ml", "foreground_voxels", "source_image", "source_mask", "image_file",
                "label_file", "size", "spacing", "pixel_type", "orientation", "notes"]
REPORT_COLUMNS = ["source_row", "subject_id", "case_id", "patient_id", "split", "fate", "reason", "notes",
                  "source_image", "source_mask"]
MAX_LISTED = 10  # lines per kind of problem on stderr; the report has them all


def output_paths(e: Entry, opts: ConversionOptions) -> dict[str, str]:
    """Role -> file relative to the dataset: ``image`` (channel 0), ``image_0001``.. (copies of it),
    ``label``, ``brain_mask``."""
    tr = e.split == "train"
    images = "imagesTr" if tr else "imagesTs"
    out = {"image": f"{images}/{e.case_id}_0000{FILE_ENDING}"}
    out.update((f"image_{c:04d}", f"{images}/{e.case_id}_{c:04d}{FILE_ENDING}")
               for c in range(1, opts.input_steps.ct_channels))
    if e.subject.mask:
        out["label"] = f"{'labelsTr' if tr else 'labelsTs'}/{e.case_id}{FILE_ENDING}"
    if opts.input_steps.brain_mask is not None:
        out["brain_mask"] = f"{BRAIN_MASK_DIR}/{e.case_id}{FILE_ENDING}"
    return out


def fingerprint(e: Entry, opts: ConversionOptions) -> dict[str, Any]:
    s = e.subject
    return {"engine": ENGINE_VERSION, "image": source_fingerprint(s.image), "mask": source_fingerprint(s.mask),
            "options": opts.as_dict(), "outputs": e.outputs,
            "expected_slices": list(s.expected_slices) if s.expected_slices is not None else None,
            "expected_num_slices": s.expected_num_slices}


def _stat(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def load_unchanged(ds: Path, e: Entry, fp: dict[str, Any]) -> dict[str, Any] | None:
    """The record of a case converted before from the same sources and options, if its outputs are intact."""
    state_file = ds / META_DIR / "cases" / f"{e.case_id}.json"
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if state.get("fingerprint") != json.loads(json.dumps(fp)):
        return None
    for rel, st in state.get("outputs", {}).items():
        if _stat(ds / rel) != st:
            return None
    return state.get("record")


def case_record(res: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in res.items() if k not in ("ok", "reason")}


class Committer:
    """Moves staged cases into place; before the first change, drops dataset.json and records the source."""

    def __init__(self, ds: Path, source: dict[str, str]) -> None:
        self.ds = ds
        self.source = source
        self.invalidated = False

    def invalidate(self) -> None:
        if not self.invalidated:
            (self.ds / "dataset.json").unlink(missing_ok=True)
            write_json_if_changed(self.source, self.ds / META_DIR / SOURCE_FILE)
            self.invalidated = True

    def commit(self, e: Entry, staged: dict[str, str], fp: dict[str, Any], record: dict[str, Any]) -> None:
        self.invalidate()
        outputs = {}
        # label, brain mask and channel copies first, channel 0 last: the case is complete once it exists
        for role in sorted(e.outputs, key=lambda r: r == "image"):
            dest = self.ds / e.outputs[role]
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged[role], dest)
            outputs[e.outputs[role]] = _stat(dest)
        write_json({"fingerprint": fp, "outputs": outputs, "record": record},
                   self.ds / META_DIR / "cases" / f"{e.case_id}.json")


def recorded_source(ds: Path) -> dict[str, str] | None:
    """Converter and source of the dataset in ``ds`` (older datasets: from dataset.json), or None."""
    for path, key in ((ds / META_DIR / SOURCE_FILE, None), (ds / "dataset.json", "nnunet_iph_conversion")):
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        d = d.get(key, {}) if key else d
        if isinstance(d, dict) and d.get("source"):
            return {"converter": str(d.get("converter", "")), "source": str(d["source"])}
    return None


def _meta_column(key: str) -> str:
    """Metadata keeps its column name unless that is one of ours (then ``source_<name>``)."""
    if key in CASE_COLUMNS and key not in ("age", "sex", "scanner", "phase"):
        return f"source_{key}"
    return key


def _fmt(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float):
        return f"{v:.10g}" if v == v else ""
    return v


def _write_if_changed(text: str, path: Path) -> None:
    """Atomic UTF-8 write, skipped when the content is already there (re-runs leave files untouched)."""
    data = text.encode("utf-8")
    try:
        if path.read_bytes() == data:
            return
    except OSError:
        pass
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _write_csv(rows: list[dict[str, Any]], columns: list[str], path: Path) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(r.get(k)) for k in columns})
    _write_if_changed(buf.getvalue(), path)


def write_json_if_changed(obj: Any, path: Path) -> None:
    _write_if_changed(json.dumps(obj, indent=2) + "\n", path)  # ASCII: nnU-Net reads JSON with the locale encoding


def print_listed(lines: list[str], what: str, ds: Path) -> None:
    """The first few problems of a kind on stderr, and where the rest are."""
    for line in lines[:MAX_LISTED]:
        print(f"  {line}", file=sys.stderr)
    if len(lines) > MAX_LISTED:
        print(f"  ... {len(lines) - MAX_LISTED} more {what} in {ds / 'conversion_report.csv'}", file=sys.stderr)


def finish(ds: Path, entries: list[Entry], opts: ConversionOptions, *, converter: str, source, name: str,
           test_fraction: float, seed: int, num_folds: int, split_scheme: str, strict: bool,
           n_unchanged: int, description: str, reference: str, licence: str,
           extra_options: dict[str, Any], committer: Committer) -> Path:
    """Report, splits, cases.csv and, last, dataset.json (the mark of a complete conversion)."""
    conv = sorted((e for e in entries if e.fate == "converted"), key=lambda e: e.case_id)
    train = [e for e in conv if e.split == "train"]
    counts = {"subjects": len(entries), "converted": len(conv), "train": len(train),
              "test": len(conv) - len(train), "unchanged": n_unchanged,
              "skipped": sum(e.fate == "skipped" for e in entries),
              "excluded": sum(e.fate == "excluded" for e in entries)}

    # report: every subject and its fate, in listing order
    report_rows = [{
        "source_row": e.subject.source_row, "subject_id": e.subject.subject_id,
        "case_id": e.case_id, "patient_id": e.patient_id, "split": e.split if e.fate == "converted" else "",
        "fate": e.fate, "reason": e.reason, "notes": "; ".join(e.notes),
        "source_image": e.subject.image or "", "source_mask": e.subject.mask or ""} for e in entries]
    _write_csv(report_rows, REPORT_COLUMNS, ds / "conversion_report.csv")

    # splits over the training cases
    split_cases = [SplitCase(e.case_id, e.patient_id, e.subject.site or "", (e.record or {}).get("volume_ml"))
                   for e in train]
    kfold = kfold_splits(split_cases, num_folds, seed)
    loso, sites = loso_splits(split_cases)
    chosen = kfold if split_scheme == "kfold" else loso
    if split_scheme == "loso" and not loso:
        raise ValueError(f"split_scheme 'loso' needs training cases from at least 2 sites; found {sites}")
    for key, splits in (("kfold", kfold), ("loso", loso), ("final", chosen)):
        path = ds / SPLIT_FILES[key]
        if splits:
            write_json_if_changed(splits, path)
        else:
            path.unlink(missing_ok=True)
    fold_of = {cid: i for i, f in enumerate(kfold) for cid in f["val"]}

    # cases.csv: one row per converted case, joinable on case_id
    brain = opts.input_steps.brain_mask is not None
    extra_cols: list[str] = list(BRAIN_COLUMNS) if brain else []
    for e in conv:
        for k in e.subject.meta:
            k = _meta_column(k)
            if k not in CASE_COLUMNS and k not in extra_cols:
                extra_cols.append(k)
    rows = []
    for e in conv:
        rec = e.record or {}
        row = {k: rec.get(k) for k in ("volume_ml", "foreground_voxels", "size", "spacing", "pixel_type",
                                       "orientation")}
        row.update(case_id=e.case_id, subject_id=e.subject.subject_id, patient_id=e.patient_id, split=e.split,
                   fold=fold_of.get(e.case_id), site=e.subject.site,
                   source_image=str(Path(e.subject.image).resolve()) if e.subject.image else "",
                   source_mask=str(Path(e.subject.mask).resolve()) if e.subject.mask else "",
                   image_file=e.outputs.get("image"), label_file=e.outputs.get("label", ""),
                   notes="; ".join(e.notes))
        if brain:
            row.update({k: rec.get(k) for k in BRAIN_COLUMNS}, brain_mask_file=e.outputs.get("brain_mask"))
        for k, v in e.subject.meta.items():
            row[_meta_column(k)] = v
        rows.append(row)
    _write_csv(rows, CASE_COLUMNS + extra_cols, ds / "cases.csv")

    print(f"{ds.name}: {counts['converted']} converted ({counts['train']} train, {counts['test']} test; "
          f"{counts['unchanged']} unchanged), {counts['skipped']} skipped, {counts['excluded']} excluded",
          file=sys.stderr)
    print_listed([f"skipped {e.subject.subject_id}: {e.reason}" for e in entries if e.fate == "skipped"],
                 "skipped", ds)
    print_listed([f"warning: {w}" for e in entries for w in e.warnings], "warnings", ds)
    if not conv:
        raise ValueError(f"{source}: no case could be converted; see {ds / 'conversion_report.csv'}")

    dataset_json = {
        "channel_names": {str(c): "CT" for c in range(opts.input_steps.ct_channels)},
        "labels": dict(opts.labels),
        "numTraining": len(train),
        "file_ending": FILE_ENDING,
        "overwrite_image_reader_writer": "SimpleITKIO",
        "name": name,
        "description": description,
        "reference": reference,
        "licence": licence,
        "numTest": len(conv) - len(train),
        "nnunet_iph_conversion": {
            "tool": f"nnunet-iph {__version__}", "converter": converter, "source": committer.source["source"],
            "options": {**opts.as_dict(), **extra_options}, "test_fraction": test_fraction, "seed": seed,
            "num_folds": num_folds, "split_scheme": split_scheme, "strict": strict,
            "counts": {k: v for k, v in counts.items() if k != "unchanged"},
            "files": {"cases": "cases.csv", "report": "conversion_report.csv",
                      "splits": SPLIT_FILES["final"] if chosen else None},
        },
    }
    if opts.input_steps.active:  # what nnunet-iph predict / prepare-inputs repeat on every input
        dataset_json[INPUT_STEPS_KEY] = opts.input_steps.record()
    write_json_if_changed(committer.source, ds / META_DIR / SOURCE_FILE)
    write_json_if_changed(dataset_json, ds / "dataset.json")
    return ds
