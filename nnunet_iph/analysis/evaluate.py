"""Evaluate a folder of predictions against a folder of references: one row per case and label.

Files are paired by case name (the file name without its nnU-Net file ending, ``.nii.gz``,
``.nrrd``, ``.mha`` ...). A prediction without a reference, or (unless ``subset=True``) a
reference without a prediction, is an error that names the files; so is a geometry mismatch
(size, spacing, origin, direction) between the two images of a case.

Output: a per-case table (columns :func:`nnunet_iph.analysis.metrics.metric_columns`) and a
summary (mean / SD / median / count per label and metric, over all cases and over the cases with a
non-empty reference, with the number of cases of each empty kind, the options used and the package
versions). Written atomically.
"""

from __future__ import annotations

import math
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from nnunet_iph.analysis import metrics as M
from nnunet_iph.analysis.label_values import (LabelValues, check_label_image, dataset_values, labels_from_dataset_json,
                                              parse_value_map)
from nnunet_iph.analysis.metric_table import summary_metrics
from nnunet_iph.analysis.output_paths import check_output_file, reporting_write_errors
from nnunet_iph.parallel import run_jobs

if TYPE_CHECKING:  # pragma: no cover
    import SimpleITK as sitk

#: file endings nnU-Net (SimpleITKIO) writes and reads, longest first
FILE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".gipl")

#: lesion counts, summed in the summary (the metric table's ``summary='sum'`` entries)
COUNT_COLUMNS = tuple(summary_metrics("sum"))


@dataclass
class EvaluationOptions:
    """Everything that changes a metric value; stored in the summary."""
    surface: str = M.DEFAULT_SURFACE
    nsd_tolerance_mm: float = M.DEFAULT_NSD_TOLERANCE_MM
    hd95_variant: str = M.DEFAULT_HD95_VARIANT
    percentile: float = M.DEFAULT_PERCENTILE
    empty_penalty: str = M.DEFAULT_EMPTY_PENALTY
    labels: list[Any] | None = None
    min_overlap_voxels: int = 1
    lesion_connectivity: str = "full (26 in 3D, 8 in 2D)"
    values: LabelValues = field(default_factory=LabelValues)
    empty_policy: str = field(default=M.EMPTY_POLICY)

    def metric_kwargs(self) -> dict[str, Any]:
        return {"surface": self.surface, "nsd_tolerance_mm": self.nsd_tolerance_mm,
                "hd95_variant": self.hd95_variant, "percentile": self.percentile,
                "empty_penalty": self.empty_penalty, "min_overlap_voxels": self.min_overlap_voxels}


# --------------------------------------------------------------------------------------------
# files

def split_case_name(name: str, file_ending: str | None = None) -> tuple[str, str] | None:
    """(case, ending) of an image file name, None for anything else (json, npz, pkl, hidden)."""
    if name.startswith("."):
        return None
    endings = (file_ending,) if file_ending else FILE_ENDINGS
    for ending in endings:
        if name.endswith(ending) and len(name) > len(ending):
            return name[: -len(ending)], ending
    return None


def find_cases(folder: str | os.PathLike, file_ending: str | None = None) -> dict[str, Path]:
    """Case name -> image file of a folder (not recursive)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"folder {folder} is a file, not a folder" if folder.exists()
                                else f"folder {folder} does not exist")
    cases: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        split = split_case_name(path.name, file_ending)
        if split is None or not path.is_file():
            continue
        case = split[0]
        if case in cases:
            raise ValueError(f"case {case!r} has two images in {folder}: {cases[case].name} and {path.name}")
        cases[case] = path
    return cases


def pair_cases(ref_dir: str | os.PathLike, pred_dir: str | os.PathLike, file_ending: str | None = None,
               subset: bool = False) -> list[tuple[str, Path, Path]]:
    """(case, reference, prediction) for every prediction; unmatched files are an error.

    ``subset``: predictions may cover only part of the references (one cross-validation fold
    against ``labelsTr``); references without a prediction are then skipped, not an error.
    """
    refs = find_cases(ref_dir, file_ending)
    preds = find_cases(pred_dir, file_ending)
    if not preds:
        raise ValueError(f"no prediction images ({', '.join(FILE_ENDINGS) if not file_ending else file_ending})"
                         f" in {pred_dir}")
    no_ref = sorted(set(preds) - set(refs))
    no_pred = sorted(set(refs) - set(preds)) if not subset else []
    if no_ref or no_pred:
        parts = []
        if no_ref:
            parts.append(f"{len(no_ref)} prediction(s) without a reference in {ref_dir}: "
                         + ", ".join(preds[c].name for c in no_ref[:20]) + (" ..." if len(no_ref) > 20 else ""))
        if no_pred:
            parts.append(f"{len(no_pred)} reference(s) without a prediction in {pred_dir}: "
                         + ", ".join(refs[c].name for c in no_pred[:20]) + (" ..." if len(no_pred) > 20 else "")
                         + " (use subset=True / --subset to evaluate only the predicted cases)")
        raise ValueError("unmatched files: " + "; ".join(parts))
    return [(case, refs[case], preds[case]) for case in sorted(preds)]


def check_geometry(ref: "sitk.Image", pred: "sitk.Image", ref_path: Path, pred_path: Path) -> None:
    """Size, spacing, origin and direction of the two images must agree (clear error otherwise)."""
    problems = []
    if ref.GetSize() != pred.GetSize():
        problems.append(f"size {pred.GetSize()} != {ref.GetSize()}")
    else:
        if not np.allclose(ref.GetSpacing(), pred.GetSpacing(), rtol=1e-4, atol=1e-5):
            problems.append(f"spacing {pred.GetSpacing()} != {ref.GetSpacing()}")
        if not np.allclose(ref.GetOrigin(), pred.GetOrigin(), rtol=0, atol=1e-3):
            problems.append(f"origin {pred.GetOrigin()} != {ref.GetOrigin()}")
        if not np.allclose(ref.GetDirection(), pred.GetDirection(), rtol=0, atol=1e-4):
            problems.append(f"direction {pred.GetDirection()} != {ref.GetDirection()}")
    if problems:
        raise ValueError(f"geometry mismatch between prediction {pred_path} and reference {ref_path}: "
                         + "; ".join(problems))


def read_pair(ref_path: Path, pred_path: Path, values: LabelValues | None = None
              ) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Both label maps (z, y, x arrays) and the spacing in array order, geometry checked.

    Read by :func:`nnunet_iph.imageio.read_image` (truncated, empty or corrupt files are refused,
    naming them) and turned into label maps by ``values`` (non-label data is refused).
    """
    import SimpleITK as sitk

    from nnunet_iph.imageio import read_image

    values = values or LabelValues()
    ref_img = read_image(ref_path, "reference")
    pred_img = read_image(pred_path, "prediction")
    check_label_image(ref_img, ref_path, "reference")
    check_label_image(pred_img, pred_path, "prediction")
    check_geometry(ref_img, pred_img, ref_path, pred_path)
    ref = values.to_labels(sitk.GetArrayFromImage(ref_img), ref_path, "reference")
    pred = values.to_labels(sitk.GetArrayFromImage(pred_img), pred_path, "prediction")
    return ref, pred, M.spacing_from_sitk(ref_img)


def resolve_labels(ref_dir: str | os.PathLike, labels: Sequence[M.Label | str] | None = None,
                   dataset_json: str | os.PathLike | None = None, value_map: Mapping[int, int] | Iterable[str]
                   | None = None, threshold: float | None = None) -> tuple[list[M.Label] | None, LabelValues]:
    """The labels to score and how images become label maps.

    ``labels`` (ints / regions ``1+2``; label 0 only when listed here) win; else the foreground
    labels of ``dataset_json`` (default ``REF_DIR/../dataset.json`` when present); else None (every
    label found). With a dataset.json, voxel values outside its labels are refused.
    """
    candidate = Path(dataset_json) if dataset_json else Path(ref_dir).resolve().parent / "dataset.json"
    if dataset_json and not candidate.is_file():
        raise FileNotFoundError(f"dataset.json {dataset_json} does not exist")
    known = candidate.is_file()
    parsed = [M.parse_label(label) for label in labels] if labels else None
    if parsed is None and known:
        parsed = labels_from_dataset_json(candidate) or None
    scored = {v for label in parsed or () for v in (label if isinstance(label, tuple) else (label,))}
    allowed = tuple(sorted(set(dataset_values(candidate)) | scored)) if known else None
    foreground = sorted(scored - {0})
    if threshold is not None and len(foreground) > 1:
        raise ValueError(f"--threshold makes one foreground label, but labels {foreground} are scored; "
                         "pass --labels with one label")
    return parsed, LabelValues(allowed, f"dataset.json {candidate}" if known else None, parse_value_map(value_map),
                               None if threshold is None else float(threshold),
                               foreground[0] if foreground else 1)


# --------------------------------------------------------------------------------------------
# evaluation

def evaluate_pair(case: str, ref_path: Path, pred_path: Path, options: EvaluationOptions
                  ) -> list[dict[str, Any]]:
    """Rows of one case (``labels=None``: the labels present in either image)."""
    ref, pred, spacing = read_pair(ref_path, pred_path, options.values)
    rows = M.case_metrics(ref, pred, spacing, options.labels, **options.metric_kwargs())
    if options.labels is None:  # both-empty case: no label present, filled in later
        present = set(M.present_labels(ref, pred))
        rows = [r for r in rows if r["label"] in present]
    return [{"case": case, **row} for row in rows]


def _evaluate_job(job: tuple[str, Path, Path, EvaluationOptions]) -> list[dict[str, Any]]:
    return evaluate_pair(*job)


def evaluate_folders(ref_dir: str | os.PathLike, pred_dir: str | os.PathLike, *,
                     output_csv: str | os.PathLike | None = None, summary_json: str | os.PathLike | None = None,
                     labels: Sequence[M.Label | str] | None = None, surface: str = M.DEFAULT_SURFACE,
                     nsd_tolerance_mm: float = M.DEFAULT_NSD_TOLERANCE_MM,
                     hd95_variant: str = M.DEFAULT_HD95_VARIANT, percentile: float = M.DEFAULT_PERCENTILE,
                     empty_penalty: str = M.DEFAULT_EMPTY_PENALTY, min_overlap_voxels: int = 1,
                     file_ending: str | None = None, subset: bool = False, num_workers: int = 1,
                     dataset_json: str | os.PathLike | None = None, threshold: float | None = None,
                     map_labels: Mapping[int, int] | Iterable[str] | None = None,
                     progress: bool = True) -> pd.DataFrame:
    """The per-case table of a prediction folder (and, when paths are given, CSV + summary JSON).

    ``labels``: ints / regions (``1+2``); default: ``dataset_json`` (or ``REF_DIR/../dataset.json``
    when present), else every label found in any reference or prediction. Every case gets a row
    for every label, a label absent from both images being a correct negative. Images that are no
    label maps are refused unless ``threshold`` (probability maps) or ``map_labels`` (``255=1``)
    says how to read them (see :func:`resolve_labels`). Output paths are checked before any image
    is read; the CSV and the summary are written together or not at all.
    """
    options = EvaluationOptions(surface=surface, nsd_tolerance_mm=float(nsd_tolerance_mm),
                                hd95_variant=hd95_variant, percentile=float(percentile),
                                empty_penalty=empty_penalty, min_overlap_voxels=int(min_overlap_voxels))
    M.check_options(surface, hd95_variant, empty_penalty, percentile, nsd_tolerance_mm)
    options.labels, options.values = resolve_labels(ref_dir, labels, dataset_json, map_labels, threshold)
    outputs = _output_paths(output_csv, summary_json)
    pairs = pair_cases(ref_dir, pred_dir, file_ending, subset)
    jobs = [(case, r, p, options) for case, r, p in pairs]
    rows: list[dict[str, Any]] = []
    for _, result in run_jobs(_evaluate_job, jobs, num_workers, desc="evaluate", progress=progress):
        rows.extend(result)
    table = _complete_table(rows, [case for case, _, _ in pairs], options)
    if outputs:
        _write_outputs(table, summarize(table, options, ref_dir=ref_dir, pred_dir=pred_dir), *outputs)
    return table


def _output_paths(output_csv: str | os.PathLike | None, summary_json: str | os.PathLike | None
                  ) -> tuple[Path | None, Path] | None:
    """(CSV or None, summary JSON) checked for writing, or None when nothing is to be written."""
    if output_csv is None and summary_json is None:
        return None
    csv = check_output_file(output_csv, "per-case CSV") if output_csv is not None else None
    summary = check_output_file(summary_json or default_summary_path(csv), "summary JSON")
    if csv is not None and csv.resolve() == summary.resolve():
        raise ValueError(f"per-case CSV and summary JSON are the same file {csv}")
    return csv, summary


def _write_outputs(table: pd.DataFrame, summary: dict[str, Any], csv: Path | None, summary_path: Path) -> None:
    """Both files or neither: each goes to a temporary name first, renamed when both are complete."""
    import json

    from nnunet_iph.imageio import atomic_path

    with reporting_write_errors("evaluation results"), atomic_path(summary_path) as tmp_json:
        tmp_json.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
        if csv is not None:
            with atomic_path(csv) as tmp_csv:
                table.to_csv(tmp_csv, index=False)


def default_summary_path(output_csv: str | os.PathLike) -> Path:
    """``metrics.csv`` -> ``metrics_summary.json`` next to it."""
    p = Path(output_csv)
    return p.with_name((p.name[:-4] if p.name.endswith(".csv") else p.name) + "_summary.json")


def _complete_table(rows: list[dict[str, Any]], cases: list[str], options: EvaluationOptions) -> pd.DataFrame:
    """One row per case and label, both-empty rows added for labels a case does not contain."""
    columns = M.metric_columns(options.nsd_tolerance_mm)
    if options.labels is not None:
        labels = [M.label_name(label) for label in options.labels]
    else:
        labels = sorted({r["label"] for r in rows}, key=lambda v: (isinstance(v, str), v)) or [1]
    have = {(r["case"], r["label"]) for r in rows}
    for case in cases:
        for label in labels:
            if (case, label) not in have:
                rows.append({"case": case, **M.both_empty_row(label, options.nsd_tolerance_mm)})
    order = {label: i for i, label in enumerate(labels)}
    rows.sort(key=lambda r: (r["case"], order.get(r["label"], len(order))))
    table = pd.DataFrame(rows, columns=columns)
    for col in COUNT_COLUMNS:
        if table[col].notna().all():
            table[col] = table[col].astype(int)
    table["empty_ref"] = table["empty_ref"].astype(bool)
    table["empty_pred"] = table["empty_pred"].astype(bool)
    return table


# --------------------------------------------------------------------------------------------
# summary

def _stats(values: pd.Series) -> dict[str, Any]:
    v = pd.to_numeric(values, errors="coerce").to_numpy(float)
    finite = v[np.isfinite(v)]
    n_nan = int(v.size - finite.size)
    if finite.size == 0:
        return {"mean": None, "sd": None, "median": None, "n": 0, "n_nan": n_nan}
    return {"mean": float(finite.mean()), "sd": float(finite.std(ddof=1)) if finite.size > 1 else None,
            "median": float(np.median(finite)), "n": int(finite.size), "n_nan": n_nan}


def empty_counts(table: pd.DataFrame) -> dict[str, int]:
    """Cases of each empty kind (never averaged away silently)."""
    er, ep = table["empty_ref"].astype(bool), table["empty_pred"].astype(bool)
    return {"both_empty": int((er & ep).sum()), "ref_empty_pred_not": int((er & ~ep).sum()),
            "pred_empty_ref_not": int((~er & ep).sum()), "both_non_empty": int((~er & ~ep).sum())}


def summarize(table: pd.DataFrame, options: EvaluationOptions | None = None, **info: Any) -> dict[str, Any]:
    """Per label: counts of each empty kind, and mean/SD/median/n of every metric over all cases
    and over the cases with a non-empty reference; plus the mean over labels (foreground mean)."""
    options = options or EvaluationOptions()
    metrics = [m for m in summary_metrics("mean", options.nsd_tolerance_mm) if m in table]
    per_label: dict[str, Any] = {}
    for label, group in table.groupby(table["label"].astype(str), sort=False):
        positive = group[~group["empty_ref"].astype(bool)]
        entry = {"n_cases": int(len(group)), "empty_cases": empty_counts(group),
                 "all_cases": {m: _stats(group[m]) for m in metrics},
                 "reference_positive_cases": {m: _stats(positive[m]) for m in metrics},
                 "lesions": {c: int(pd.to_numeric(group[c], errors="coerce").fillna(0).sum())
                             for c in COUNT_COLUMNS if c in group}}
        per_label[str(label)] = entry
    foreground = {}
    for m in metrics:
        means = [e["all_cases"][m]["mean"] for e in per_label.values() if e["all_cases"][m]["mean"] is not None]
        foreground[m] = float(np.mean(means)) if means else None
    return _json_safe({"n_cases": int(table["case"].nunique()), "labels": list(per_label),
                       "per_label": per_label, "foreground_mean": foreground,
                       "options": asdict(options), "versions": package_versions(), **info})


def package_versions() -> dict[str, str]:
    import scipy

    import nnunet_iph

    out = {"python": platform.python_version(), "nnunet_iph": nnunet_iph.__version__,
           "numpy": np.__version__, "scipy": scipy.__version__, "pandas": pd.__version__}
    try:
        import SimpleITK as sitk

        out["SimpleITK"] = sitk.Version_VersionString()
    except ImportError:  # pragma: no cover
        pass
    return out


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def format_summary(summary: dict[str, Any], metrics: Iterable[str] | None = None) -> str:
    """A short Markdown table of a summary: per label, mean (SD) over all cases, with the counts."""
    nsd = M.nsd_column(summary["options"]["nsd_tolerance_mm"])
    metrics = list(metrics or ["dice", "hd95_mm", "assd_mm", nsd, "recall", "precision"])
    head = "| label | cases | both empty | missed (pred empty) | false pos. (ref empty) | " + " | ".join(metrics) + " |"
    lines = [head, "|" + "---|" * (4 + len(metrics) + 1)]
    for label, e in summary["per_label"].items():
        c = e["empty_cases"]
        cells = []
        for m in metrics:
            s = e["all_cases"].get(m, {})
            cells.append("n/a" if s.get("mean") is None else
                         f"{s['mean']:.3f} ({s['sd']:.3f})" if s.get("sd") is not None else f"{s['mean']:.3f}")
        lines.append(f"| {label} | {e['n_cases']} | {c['both_empty']} | {c['pred_empty_ref_not']} | "
                     f"{c['ref_empty_pred_not']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = ["FILE_ENDINGS", "EvaluationOptions", "find_cases", "pair_cases", "check_geometry", "read_pair",
           "labels_from_dataset_json", "resolve_labels", "evaluate_pair", "evaluate_folders", "summarize",
           "empty_counts",
           "format_summary", "package_versions", "default_summary_path", "split_case_name"]
