"""Collect nnU-Net results into one tidy per-case table joined with the dataset's ``cases.csv``.

Layout walked (nnU-Net v2)::

    <results>/DatasetXXX_Name/<Trainer>__<Plans>__<config>/fold_N/validation/{<case>.nii.gz, summary.json}
    <results>/DatasetXXX_Name/ensembles/ensemble___<T__P__C>___<T__P__C>___<folds>/{<case>.nii.gz, summary.json}

Cascades need nothing special (``3d_cascade_fullres`` is just another configuration); test-set
prediction folders are given explicitly (:func:`parse_source_spec`). ``crossval_results_folds_*``
folders are copies of the fold validations and are skipped.

One row per (split, model, plans, configuration, case, label). Metrics come from our own
``evaluate_folders`` (prediction vs the raw ``labelsTr``/``labelsTs``) or, when asked, from
nnU-Net's ``summary.json`` (Dice, IoU and the confusion counts only: no distances, no volumes).

Why so strict: paired statistics need every system scored on the same cases exactly once, so a
case predicted twice (in two folds) or missing from a model is an error, not a silent NaN.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

KEY_COLUMNS = ("dataset", "split", "model", "plans", "configuration", "fold", "system", "row", "case", "label")
DEFAULT_FILE_ENDING = ".nii.gz"
_DATASET_RE = re.compile(r"^Dataset(\d{3})_(.+)$")


@dataclass(frozen=True)
class PredictionSource:
    """One folder of predicted label maps and what produced it."""

    pred_dir: Path
    model: str
    plans: str = "-"
    configuration: str = "-"
    fold: str = "-"
    split: str = "validation"
    dataset: str | None = None
    ref_dir: Path | None = None
    file_ending: str = DEFAULT_FILE_ENDING

    @property
    def summary_json(self) -> Path | None:
        p = self.pred_dir / "summary.json"
        return p if p.is_file() else None


@dataclass
class Collection:
    """The tidy table plus the messages explaining what was skipped or tolerated."""

    table: pd.DataFrame
    sources: list[PredictionSource]
    messages: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# discovery

def _file_ending(folder: Path) -> str:
    for cand in (folder / "dataset.json", folder.parent / "dataset.json", folder.parent.parent / "dataset.json"):
        if cand.is_file():
            try:
                return json.loads(cand.read_text(encoding="utf-8")).get("file_ending", DEFAULT_FILE_ENDING)
            except (OSError, json.JSONDecodeError):
                pass
    return DEFAULT_FILE_ENDING


def _dataset_matches(name: str, wanted: str | int | None) -> bool:
    if wanted is None:
        return True
    m = _DATASET_RE.match(name)
    wanted = str(wanted)
    return name == wanted or (m is not None and wanted.isdigit() and int(m.group(1)) == int(wanted))


def _trainer_sources(trainer_dir: Path, dataset: str | None, folds: set[str] | None) -> list[PredictionSource]:
    parts = trainer_dir.name.split("__")
    if len(parts) != 3:
        return []
    trainer, plans, config = parts
    ending = _file_ending(trainer_dir)
    out = []
    for fold_dir in sorted(trainer_dir.glob("fold_*")):
        fold = fold_dir.name[len("fold_"):]
        if folds is not None and fold not in folds:
            continue
        val = fold_dir / "validation"
        if val.is_dir():
            out.append(PredictionSource(val, trainer, plans, config, fold, "validation", dataset, file_ending=ending))
    return out


def _ensemble_members(ens_dir: Path, parts: list[str]) -> list[list[str]] | None:
    """``[trainer, plans, configuration]`` per member: from ``ensemble.json`` (a long ensemble's folder
    name is a hash) or else from the folder name."""
    record = ens_dir / "ensemble.json"
    if record.is_file():
        try:
            members = [Path(m).name.split("__") for m in json.loads(record.read_text(encoding="utf-8"))["members"]]
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            members = None
        if members and all(len(m) == 3 for m in members):
            return members
    members = [m.split("__") for m in parts[1:-1]]
    return members if members and all(len(m) == 3 for m in members) else None


def _ensemble_source(ens_dir: Path, dataset: str | None) -> PredictionSource | None:
    parts = ens_dir.name.split("___")
    if len(parts) < 3 or parts[0] != "ensemble":
        return None
    members = _ensemble_members(ens_dir, parts)
    if members is None:
        return None
    uniq = lambda xs: list(dict.fromkeys(xs))  # noqa: E731
    trainers, plans, configs = (uniq(m[i] for m in members) for i in range(3))
    return PredictionSource(ens_dir, trainers[0] if len(trainers) == 1 else "ensemble", "+".join(plans),
                            "+".join(configs), f"ensemble_{parts[-1]}", "validation", dataset,
                            file_ending=_file_ending(ens_dir))


def discover_sources(results: str | os.PathLike, dataset: str | int | None = None,
                     folds: Iterable[int | str] | None = None,
                     include_ensembles: bool = True) -> list[PredictionSource]:
    """All validation prediction folders under ``results``.

    ``results`` may be the ``nnUNet_results`` root, one ``DatasetXXX_Name`` folder, or one
    ``<Trainer>__<Plans>__<config>`` folder. ``dataset`` (id or name) filters the root.
    """
    results = Path(results)
    if not results.is_dir():
        raise FileNotFoundError(f"results folder {results} does not exist")
    fold_set = None if folds is None else {str(f) for f in folds}
    if len(results.name.split("__")) == 3 and any(results.glob("fold_*")):
        ds = results.parent.name if _DATASET_RE.match(results.parent.name) else None
        return _trainer_sources(results, ds, fold_set)
    if _DATASET_RE.match(results.name):
        dataset_dirs = [results]
    else:
        dataset_dirs = sorted(d for d in results.iterdir() if d.is_dir() and _DATASET_RE.match(d.name)
                              and _dataset_matches(d.name, dataset))
    sources: list[PredictionSource] = []
    for ds_dir in dataset_dirs:
        for child in sorted(ds_dir.iterdir()):
            if child.is_dir():
                sources += _trainer_sources(child, ds_dir.name, fold_set)
        ens_root = ds_dir / "ensembles"
        if include_ensembles and ens_root.is_dir():
            for ens in sorted(ens_root.iterdir()):
                src = _ensemble_source(ens, ds_dir.name) if ens.is_dir() else None
                if src is not None:
                    sources.append(src)
    if not sources:
        raise FileNotFoundError(f"no nnU-Net validation or ensemble prediction folders found under {results} "
                                "(expected <Dataset>/<Trainer>__<Plans>__<config>/fold_N/validation)")
    return sources


def parse_source_spec(spec: str, split: str = "test", ref_dir: str | os.PathLike | None = None) -> PredictionSource:
    """``NAME=DIR`` -> a source; NAME is ``Trainer__Plans__config`` or a free model name."""
    if "=" not in spec:
        raise ValueError(f"prediction folder spec {spec!r}: expected NAME=DIR")
    name, folder = spec.split("=", 1)
    folder_path = Path(folder)
    if not folder_path.is_dir():
        raise FileNotFoundError(f"prediction folder {folder_path} (from {spec!r}) does not exist")
    parts = name.split("__")
    trainer, plans, config = parts if len(parts) == 3 else (name, "-", "-")
    return PredictionSource(folder_path, trainer, plans, config, "-", split,
                            ref_dir=Path(ref_dir) if ref_dir else None, file_ending=_file_ending(folder_path))


# --------------------------------------------------------------------------------------------
# case files

def case_files(folder: Path, file_ending: str = DEFAULT_FILE_ENDING) -> dict[str, Path]:
    """``{case: path}`` for the label maps in ``folder`` (hidden / temporary files ignored)."""
    return {p.name[: -len(file_ending)]: p for p in sorted(folder.glob(f"*{file_ending}"))
            if not p.name.startswith(".")}


def _read_csv(path: Path, **kwargs: Any) -> pd.DataFrame:
    """``pd.read_csv`` whose failures (empty file, bad quoting, not text) name the file."""
    try:
        return pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable CSV table ({err})") from None


def load_cases(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``cases.csv``; the key column ``case_id`` (or ``case``) becomes ``case``; must be unique."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cases file {path} does not exist")
    cases = _read_csv(path, dtype={"case_id": str, "case": str})
    key = "case_id" if "case_id" in cases.columns else "case" if "case" in cases.columns else None
    if key is None:
        raise ValueError(f"{path}: no 'case_id' column (have: {', '.join(map(str, cases.columns))})")
    cases = cases.rename(columns={key: "case"})
    blank = cases["case"].isna() | (cases["case"].astype(str).str.strip() == "")
    if blank.any():
        raise ValueError(f"{path}: empty case_id on line(s) {(np.flatnonzero(blank) + 2).tolist()[:10]}")
    cases["case"] = cases["case"].astype(str).str.strip()
    _check_numeric(cases, path)
    dup = cases["case"][cases["case"].duplicated()].unique().tolist()
    if dup:
        raise ValueError(f"{path}: duplicated case_id(s) {dup[:10]}{' ...' if len(dup) > 10 else ''}")
    return cases


def _raw_dataset_dir(dataset: str | None) -> Path | None:
    raw = os.environ.get("nnUNet_raw")
    if not raw or not dataset:
        return None
    p = Path(raw) / dataset
    return p if p.is_dir() else None


def _splits_final(dataset: str | None) -> list[dict] | None:
    pre = os.environ.get("nnUNet_preprocessed")
    if not pre or not dataset:
        return None
    p = Path(pre) / dataset / "splits_final.json"
    try:
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


def resolve_reference_dir(src: PredictionSource, labels_dir: str | os.PathLike | None = None,
                          test_labels_dir: str | os.PathLike | None = None) -> Path | None:
    """Where the reference labels for ``src`` live; None when none can be found.

    Order: the source's own ``ref_dir``; the explicit folder for its split; ``$nnUNet_raw/<dataset>/
    labelsTr`` (``labelsTs`` for test); the folder of the ``reference_file`` entries of its summary.json.
    """
    if src.ref_dir is not None:
        return src.ref_dir
    explicit = test_labels_dir if src.split == "test" else labels_dir
    if explicit is not None:
        return Path(explicit)
    raw = _raw_dataset_dir(src.dataset)
    if raw is not None:
        cand = raw / ("labelsTs" if src.split == "test" else "labelsTr")
        if cand.is_dir():
            return cand
    if src.summary_json is not None:
        try:
            entries = summary_entries(src.summary_json)
        except ValueError:  # reported when (if) its metrics are read
            entries = []
        dirs = {Path(e["reference_file"]).parent for e in entries if isinstance(e.get("reference_file"), str)}
        if len(dirs) == 1 and next(iter(dirs)).is_dir():
            return next(iter(dirs))
    return None


# --------------------------------------------------------------------------------------------
# metrics per source

def summary_entries(summary_json: str | os.PathLike) -> list[dict[str, Any]]:
    """The ``metric_per_case`` entries of an nnU-Net summary.json, checked for shape.

    Raises ``ValueError`` naming the file (never a ``KeyError`` / ``AttributeError`` traceback):
    not JSON, not an object, no ``metric_per_case`` list, no cases, an entry without a
    ``prediction_file`` string or a ``metrics`` object per label.
    """
    path = Path(summary_json)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable JSON file ({err})") from None
    entries = data.get("metric_per_case") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        got = f"a JSON {type(data).__name__}" if not isinstance(data, dict) else "no 'metric_per_case' list"
        raise ValueError(f"{path}: not an nnU-Net summary.json (expected an object with a 'metric_per_case' "
                         f"list, got {got})")
    if not entries:
        raise ValueError(f"{path}: 'metric_per_case' is empty: no case to analyse")
    for i, entry in enumerate(entries):
        ok = (isinstance(entry, dict) and isinstance(entry.get("prediction_file"), str)
              and isinstance(entry.get("metrics"), dict) and entry["metrics"]
              and all(isinstance(m, dict) for m in entry["metrics"].values()))
        if not ok:
            raise ValueError(f"{path}: metric_per_case[{i}] is malformed (expected 'prediction_file' and a "
                             "'metrics' object per label)")
    return entries


def _summary_number(value: Any, path: Path, case: str, label: str, key: str, upper: float | None) -> float:
    """A metric of summary.json as a float: None / NaN stay NaN (nnU-Net's "undefined"); anything
    else that is not a number within [0, upper] is an error naming file, case and label."""
    if value is None:
        return np.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{path}: case {case}, label {label}: {key} = {value!r} is not a number")
    v = float(value)
    if not np.isnan(v) and not (0.0 <= v <= (upper if upper is not None else np.inf)):
        raise ValueError(f"{path}: case {case}, label {label}: {key} = {value!r} outside "
                         f"[0, {upper if upper is not None else 'inf'}]")
    return v


def metrics_from_summary(summary_json: Path, file_ending: str = DEFAULT_FILE_ENDING) -> pd.DataFrame:
    """Per-case rows from nnU-Net's summary.json: Dice, IoU, precision, recall, specificity, counts."""
    path = Path(summary_json)
    rows = []
    for entry in summary_entries(path):
        name = Path(entry["prediction_file"]).name
        case = name[: -len(file_ending)] if name.endswith(file_ending) else name.split(".")[0]
        for label, m in entry["metrics"].items():
            num = lambda key, upper=None: _summary_number(m.get(key), path, case, label, key, upper)  # noqa: E731
            tp, fp, fn, tn = (num(k) for k in ("TP", "FP", "FN", "TN"))
            n_ref, n_pred = num("n_ref"), num("n_pred")
            div = lambda a, b: a / b if b > 0 else np.nan  # noqa: E731
            rows.append({"case": case, "label": str(label), "dice": num("Dice", 1.0), "iou": num("IoU", 1.0),
                         "precision": div(tp, tp + fp), "recall": div(tp, tp + fn),
                         "specificity": div(tn, tn + fp), "n_ref_voxels": n_ref, "n_pred_voxels": n_pred,
                         "empty_ref": n_ref == 0, "empty_pred": n_pred == 0,
                         "prediction_file": entry.get("prediction_file"),
                         "reference_file": entry.get("reference_file")})
    return pd.DataFrame(rows)


def _evaluate_folders():
    try:
        from nnunet_iph.analysis.evaluate import evaluate_folders
    except ImportError as err:  # pragma: no cover - only while the evaluate module is missing
        raise ImportError(f"nnunet_iph.analysis.evaluate is not available ({err}); use metric_source='summary'")
    return evaluate_folders


def metrics_from_evaluation(pred_dir: Path, ref_dir: Path, evaluate_kwargs: dict[str, Any] | None = None,
                            file_ending: str = DEFAULT_FILE_ENDING,
                            dataset_json: Path | None = None) -> pd.DataFrame:
    """Our metrics (``evaluate_folders``) for the predictions in ``pred_dir`` against ``ref_dir``.

    ``subset=True``: a fold's validation folder holds only a fifth of ``labelsTr``.
    ``dataset_json`` (labels to score) is used when the reference folder has none beside it.
    """
    evaluate_folders = _evaluate_folders()
    params = inspect.signature(evaluate_folders).parameters
    kwargs = {k: v for k, v in (evaluate_kwargs or {}).items() if k in params and v is not None}
    defaults = {"file_ending": file_ending, "subset": True, "progress": False}
    if dataset_json is not None and not (Path(ref_dir).resolve().parent / "dataset.json").is_file():
        defaults["dataset_json"] = dataset_json
    for key, val in defaults.items():
        if key in params:
            kwargs.setdefault(key, val)
    table = evaluate_folders(ref_dir, pred_dir, **kwargs).copy()
    table["case"] = table["case"].astype(str)
    table["prediction_file"] = [str(Path(pred_dir) / f"{c}{file_ending}") for c in table["case"]]
    table["reference_file"] = [str(Path(ref_dir) / f"{c}{file_ending}") for c in table["case"]]
    return table


def _dataset_json_for(src: PredictionSource) -> Path | None:
    for cand in (src.pred_dir / "dataset.json", src.pred_dir.parent / "dataset.json",
                 src.pred_dir.parent.parent / "dataset.json"):
        if cand.is_file():
            return cand
    raw = _raw_dataset_dir(src.dataset)
    return raw / "dataset.json" if raw is not None and (raw / "dataset.json").is_file() else None


# --------------------------------------------------------------------------------------------
# display names

def _common_prefix(names: Sequence[str]) -> str:
    """Longest common prefix ending with '_' (``nnUNetPlans_axial``/``_coronal`` -> ``nnUNetPlans_``)."""
    if len(names) < 2:
        return ""
    prefix = os.path.commonprefix(list(names))
    cut = prefix.rfind("_")
    return prefix[: cut + 1] if cut >= 0 else ""


def add_display_columns(table: pd.DataFrame) -> pd.DataFrame:
    """Add ``row`` (plans/configuration, for table rows) and ``system`` (the unit of the statistics).

    Only the parts that vary are kept, plans names lose their common prefix, so three plane plans
    ``nnUNetPlans_axial/_coronal/_sagittal`` with one configuration become rows ``axial``,
    ``coronal``, ``sagittal``.
    """
    table = table.copy()
    plan_parts = sorted({p for plans in table["plans"].astype(str) for p in plans.split("+")})
    prefix = _common_prefix(plan_parts)
    short = lambda plans: "+".join(p[len(prefix):] or p for p in str(plans).split("+"))  # noqa: E731
    vary_plans = table["plans"].nunique() > 1
    vary_conf = table["configuration"].nunique() > 1
    rows = []
    for plans, conf, fold in zip(table["plans"], table["configuration"], table["fold"]):
        parts = ([short(plans)] if vary_plans else []) + ([str(conf)] if vary_conf or not vary_plans else [])
        label = " ".join(parts)
        if str(fold).startswith("ensemble") and not label.startswith("ensemble"):
            label = f"ensemble {label}"
        rows.append(label)
    table["row"] = rows
    vary_model = table["model"].nunique() > 1
    vary_row = table["row"].nunique() > 1
    table["system"] = [" / ".join(([m] if vary_model or not vary_row else []) + ([r] if vary_row else []))
                       for m, r in zip(table["model"].astype(str), table["row"])]
    return table


# --------------------------------------------------------------------------------------------
# the collection

def _expected_cases(split: str, srcs: list[PredictionSource], ref_cases: set[str] | None,
                    messages: list[str]) -> set[str] | None:
    """Cases every system of this split must have, or None when it cannot be known."""
    if split == "test" or not srcs:
        return ref_cases
    folds = {s.fold for s in srcs if not s.fold.startswith("ensemble") and s.fold != "-"}
    splits = _splits_final(srcs[0].dataset)
    if splits is not None and folds and all(f.isdigit() and int(f) < len(splits) for f in folds):
        return {c for f in folds for c in splits[int(f)]["val"]}
    if ref_cases is not None and folds >= {"0", "1", "2", "3", "4"}:
        return ref_cases
    if folds:
        messages.append(f"{split}: folds {sorted(folds)} without splits_final.json: completeness checked only "
                        "across systems, not against the reference labels")
    return None


def collect(sources: Sequence[PredictionSource], cases: pd.DataFrame | str | os.PathLike | None = None, *,
            labels_dir: str | os.PathLike | None = None, test_labels_dir: str | os.PathLike | None = None,
            metric_source: str = "evaluate", allow_missing: bool = False,
            evaluate_kwargs: dict[str, Any] | None = None) -> Collection:
    """Score every source and build the tidy per-case table (see the module docstring).

    ``metric_source``: 'evaluate' (our metrics vs the raw labels), 'summary' (nnU-Net's
    summary.json) or 'auto' (evaluate when reference labels are found, else summary.json).
    Raises ``ValueError`` on a case scored twice for one system, on cases absent from
    ``cases.csv``, and (unless ``allow_missing``) on cases a system lacks.
    """
    if metric_source not in ("evaluate", "summary", "auto"):
        raise ValueError(f"metric_source must be evaluate, summary or auto, not {metric_source!r}")
    if not sources:
        raise ValueError("no prediction folders to collect")
    messages: list[str] = []
    frames = []
    ref_sets: dict[str, set[str]] = {}
    for src in sources:
        pred_files = case_files(src.pred_dir, src.file_ending)
        ref_dir = resolve_reference_dir(src, labels_dir, test_labels_dir)
        use = metric_source
        if use == "auto":
            use = "evaluate" if ref_dir is not None and ref_dir.is_dir() else "summary"
        if not pred_files and (use == "evaluate" or src.summary_json is None):
            messages.append(f"{src.pred_dir}: no *{src.file_ending} predictions, skipped")
            continue
        if use == "summary":
            if src.summary_json is None:
                raise FileNotFoundError(f"{src.pred_dir}/summary.json not found (needed for metric_source="
                                        f"{metric_source!r}); evaluate against the labels instead")
            frame = metrics_from_summary(src.summary_json, src.file_ending)
            if ref_dir is not None and ref_dir.is_dir():
                ref_sets.setdefault(src.split, set(case_files(ref_dir, src.file_ending)))
            unknown = set(frame["case"]) - set(pred_files)
            if unknown:
                messages.append(f"{src.summary_json}: {len(unknown)} case(s) without a prediction file")
            unscored = sorted(set(pred_files) - set(frame["case"]))
            if unscored:
                messages.append(f"{src.summary_json}: {len(unscored)} prediction file(s) not in summary.json "
                                f"(stale summary?), so without metrics: {unscored[:10]}")
        else:
            if ref_dir is None or not ref_dir.is_dir():
                raise FileNotFoundError(f"no reference labels for {src.pred_dir} (split {src.split}): pass the "
                                        f"{'test ' if src.split == 'test' else ''}labels folder explicitly")
            ref_files = case_files(ref_dir, src.file_ending)
            ref_sets.setdefault(src.split, set(ref_files))
            no_ref = sorted(set(pred_files) - set(ref_files))
            if no_ref:
                raise ValueError(f"{src.pred_dir}: {len(no_ref)} prediction(s) without a reference label in "
                                 f"{ref_dir}: {no_ref[:10]}")
            print(f"scoring {src.pred_dir} ({len(pred_files)} case(s))", file=sys.stderr)
            frame = metrics_from_evaluation(src.pred_dir, ref_dir, evaluate_kwargs, src.file_ending,
                                            _dataset_json_for(src))
        for col, val in (("split", src.split), ("model", src.model), ("plans", src.plans),
                         ("configuration", src.configuration), ("fold", src.fold), ("dataset", src.dataset or "")):
            frame.insert(0, col, val)
        frame["pred_dir"] = str(src.pred_dir)
        frames.append(frame)
    if not frames:
        raise ValueError("none of the prediction folders contains predictions: " +
                         "; ".join(str(s.pred_dir) for s in sources))
    table = pd.concat(frames, ignore_index=True)
    table["case"] = table["case"].astype(str)
    table["label"] = table["label"].astype(str) if "label" in table.columns else "1"
    table["fold"] = table["fold"].astype(str)
    check_duplicates(table)
    _check_completeness(table, sources, ref_sets, allow_missing, messages)
    table = add_display_columns(table)
    if cases is not None:
        table = join_cases(table, cases)
    table, notes = normalize_demographics(table)
    return Collection(order_columns(table), list(sources), messages + notes)


def check_duplicates(table: pd.DataFrame) -> None:
    """A (split, model, plans, configuration, case, label) may occur once; raise listing the offenders."""
    keys = ["split", "model", "plans", "configuration", "case", "label"]
    dup = table[table.duplicated(keys, keep=False)]
    if len(dup):
        lines = []
        for key, grp in dup.groupby(keys, sort=False):
            where = ", ".join(f"fold {f} ({d})" for f, d in zip(grp["fold"], grp.get("pred_dir", grp["fold"])))
            lines.append(f"case {key[4]} of {key[1]}__{key[2]}__{key[3]} ({key[0]}) appears {len(grp)} times: {where}")
        raise ValueError("duplicated cases (each case must be predicted once per model):\n  " +
                         "\n  ".join(lines[:20]) + ("\n  ..." if len(lines) > 20 else ""))


def _check_completeness(table: pd.DataFrame, sources: Sequence[PredictionSource], ref_sets: dict[str, set[str]],
                        allow_missing: bool, messages: list[str]) -> None:
    problems = []
    for split, sub in table.groupby("split", sort=False):
        srcs = [s for s in sources if s.split == split]
        expected = _expected_cases(split, srcs, ref_sets.get(split), messages)
        union = set(sub["case"])
        target = union | (expected or set())
        for key, grp in sub.groupby(["model", "plans", "configuration"], sort=False):
            missing = sorted(target - set(grp["case"]))
            if missing:
                problems.append(f"{'__'.join(key)} ({split}) lacks {len(missing)} of {len(target)} case(s): "
                                f"{missing[:10]}{' ...' if len(missing) > 10 else ''}")
    if problems and not allow_missing:
        raise ValueError("missing cases (train/predict all folds, or pass --allow-missing to analyse the common "
                         "cases only):\n  " + "\n  ".join(problems))
    messages += [f"allowed missing: {p}" for p in problems]


def join_cases(table: pd.DataFrame, cases: pd.DataFrame | str | os.PathLike) -> pd.DataFrame:
    """Left-join case metadata; every scored case must be in ``cases``. Adds ``reference_volume_ml``.

    ``reference_volume_ml`` is the evaluated reference volume (``volume_ref_ml``) where available,
    else the ``volume_ml`` of cases.csv.
    """
    if not isinstance(cases, pd.DataFrame):
        cases = load_cases(cases)
    elif "case" not in cases.columns:
        cases = cases.rename(columns={"case_id": "case"})
    cases = cases.copy()
    cases["case"] = cases["case"].astype(str)
    if cases["case"].duplicated().any():
        raise ValueError(f"cases table: duplicated case ids {cases['case'][cases['case'].duplicated()].tolist()[:10]}")
    unknown = sorted(set(table["case"]) - set(cases["case"]))
    if unknown:
        raise ValueError(f"{len(unknown)} scored case(s) not in cases.csv: {unknown[:10]}"
                         f"{' ...' if len(unknown) > 10 else ''}")
    clash = [c for c in cases.columns if c != "case" and c in table.columns]
    cases = cases.rename(columns={c: f"{c}_case" for c in clash})
    out = table.merge(cases, on="case", how="left", validate="many_to_one")
    ref = pd.to_numeric(out["volume_ref_ml"], errors="coerce") if "volume_ref_ml" in out.columns else None
    meta = pd.to_numeric(out["volume_ml"], errors="coerce") if "volume_ml" in out.columns else None
    if ref is not None and meta is not None:
        out["reference_volume_ml"] = ref.fillna(meta)
    elif ref is not None or meta is not None:
        out["reference_volume_ml"] = ref if ref is not None else meta
    return out


def normalize_demographics(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``sex`` and ``age`` through :mod:`nnunet_iph.demographics`; notes list every change.

    Why: ``F``/``female``/``m`` would each be a level of the OLS sex term, and an age of ``abc``,
    ``-5`` or ``250`` a silently dropped case or a wild number. The notes give the mapping once and
    then each value mapped or blanked, with its number of cases.
    """
    from nnunet_iph.demographics import describe_mapping, normalize_age, normalize_sex

    table = table.copy()
    notes: list[str] = []
    for col, normalize in (("sex", normalize_sex), ("age", normalize_age)):
        if col not in table.columns:
            continue
        done = [normalize(v) for v in table[col]]
        first = ~table["case"].duplicated().to_numpy()  # count cases, not rows
        changes: dict[str, int] = {}
        for raw, (value, note), count_it in zip(table[col], done, first):
            if note is None and col == "sex" and value is not None and str(raw).strip() != value:
                note = f"sex {str(raw)!r} -> {value!r}"
            if note is not None:
                changes[note] = changes.get(note, 0) + int(count_it)
        notes += [f"{change} ({n} case(s))" for change, n in changes.items()]
        table[col] = pd.Series([v for v, _ in done], index=table.index,
                               dtype=object if col == "sex" else float)
    if notes:
        notes.insert(0, f"demographics normalised: {describe_mapping()}")
    return table, notes


def order_columns(table: pd.DataFrame) -> pd.DataFrame:
    first = [c for c in KEY_COLUMNS if c in table.columns]
    last = [c for c in ("prediction_file", "reference_file", "pred_dir") if c in table.columns]
    return table[first + [c for c in table.columns if c not in first and c not in last] + last]


def load_metrics_csv(path: str | os.PathLike, name: str | None = None) -> pd.DataFrame:
    """A per-case metrics CSV (``nnunet-iph evaluate`` output or an earlier ``per_case.csv``) as a table.

    Files without the key columns become one model named ``name`` (default: the file stem).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metrics CSV {path} does not exist")
    df = _read_csv(path, dtype={"case": str, "case_id": str, "label": str, "fold": str})
    if "case" not in df.columns:
        if "case_id" not in df.columns:
            raise ValueError(f"{path}: no 'case' column (have: {', '.join(map(str, df.columns))})")
        df = df.rename(columns={"case_id": "case"})
    blank = df["case"].isna() | (df["case"].astype(str).str.strip() == "")
    if blank.any():
        raise ValueError(f"{path}: empty case on line(s) {(np.flatnonzero(blank) + 2).tolist()[:10]}")
    _check_numeric(df, path)
    defaults = {"split": "validation", "model": name or path.stem.removesuffix(".csv"), "plans": "-",
                "configuration": "-", "fold": "-", "label": "1"}
    for col, val in defaults.items():
        if col not in df.columns:
            df[col] = val
        elif col == "model" and name:
            df[col] = name
    df = df.drop(columns=[c for c in ("system", "row") if c in df.columns])
    return df


def _check_numeric(df: pd.DataFrame, path: Path) -> None:
    """Metric and volume (``*_ml``) columns must hold numbers: text would become a silent NaN."""
    from nnunet_iph.analysis.stats import metric_direction

    for col in df.columns:
        if not (metric_direction(str(col)) is not None or str(col).endswith("_ml")):
            continue
        raw = df[col]
        num = pd.to_numeric(raw, errors="coerce")
        bad = raw.notna() & num.isna() & ~raw.astype(str).str.strip().str.lower().isin(["", "nan"])
        if bad.any():
            lines = (np.flatnonzero(bad) + 2).tolist()
            raise ValueError(f"{path}: column '{col}' has non-numeric value(s) {raw[bad].unique().tolist()[:5]} "
                             f"on line(s) {lines[:10]}")
        df[col] = num


def table_from_metrics_csvs(specs: Sequence[str], cases: pd.DataFrame | str | os.PathLike | None = None,
                            allow_missing: bool = False) -> Collection:
    """Combine ``[NAME=]PATH`` metric CSVs into the tidy table, with the same checks as :func:`collect`."""
    frames = []
    for spec in specs:
        name, path = spec.split("=", 1) if "=" in spec and not Path(spec).is_file() else (None, spec)
        frames.append(load_metrics_csv(path, name))
    table = pd.concat(frames, ignore_index=True)
    # metadata columns of an earlier per_case.csv are re-joined from cases.csv
    if cases is not None:
        meta = load_cases(cases) if not isinstance(cases, pd.DataFrame) else cases
        table = table.drop(columns=[c for c in meta.columns if c not in KEY_COLUMNS and c in table.columns]
                           + [c for c in table.columns if c.endswith("_case") or c == "reference_volume_ml"])
    table["case"] = table["case"].astype(str)
    table["label"] = table["label"].astype(str)
    table["fold"] = table["fold"].astype(str)
    check_duplicates(table)
    messages: list[str] = []
    _check_completeness(table, [], {}, allow_missing, messages)
    table = add_display_columns(table)
    if cases is not None:
        table = join_cases(table, cases)
    table, notes = normalize_demographics(table)
    return Collection(order_columns(table), [], messages + notes)


def restrict_to_common_cases(table: pd.DataFrame, model_col: str = "system") -> tuple[pd.DataFrame, list[str]]:
    """Keep, per split and label, only cases scored by every system (for paired statistics)."""
    keep = []
    msgs = []
    for (split, label), sub in table.groupby(["split", "label"], sort=False):
        sets = [set(g["case"]) for _, g in sub.groupby(model_col, sort=False)]
        common = set.intersection(*sets)
        dropped = set.union(*sets) - common
        if dropped:
            msgs.append(f"{split}, label {label}: {len(dropped)} case(s) not scored by every system excluded")
        keep.append(sub[sub["case"].isin(common)])
    return pd.concat(keep, ignore_index=True), msgs


__all__ = ["PredictionSource", "Collection", "discover_sources", "parse_source_spec", "case_files", "load_cases",
           "resolve_reference_dir", "metrics_from_summary", "metrics_from_evaluation", "add_display_columns",
           "collect", "check_duplicates", "join_cases", "load_metrics_csv", "table_from_metrics_csvs",
           "restrict_to_common_cases", "summary_entries", "normalize_demographics"]
