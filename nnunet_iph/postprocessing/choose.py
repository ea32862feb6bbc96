"""Choose post-processing on cross-validation results (nnU-Net's ``determine_postprocessing``,
with our metrics and a small grid of options).

Every candidate of the grid is applied to every validation prediction and scored with
:func:`nnunet_iph.analysis.metrics.box_metrics`; the mean of the chosen metric over all cases and
labels decides, in the direction of the metric table (higher / lower is better; for the relative
volume difference the mean of ``|rvd|``, so that removing lesions does not look like progress).
A candidate is kept only if it beats the current choice by more than ``min_improvement``; with
``greedy=True`` further candidates are then stacked on the best one while they still improve. Images are read once and only the bounding box of each case's
foreground (plus the kernels' reach) is kept, so the grid costs little.

Given the intracranial masks (a :class:`~nnunet_iph.postprocessing.brain.BrainSource`), the grid
gains the restriction to the brain, alone and combined with each other candidate; what it removes
per case is reported whether or not it is chosen.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from nnunet_iph.analysis import metrics as M
from nnunet_iph.analysis.evaluate import _json_safe, pair_cases, read_pair, resolve_labels
from nnunet_iph.analysis.label_values import LabelValues
from nnunet_iph.analysis.metric_table import (DIRECTION_TEXT, metric_direction, objective_name, objective_sign,
                                              objective_values, scored_metrics)
from nnunet_iph.analysis.output_paths import check_output_dir, reporting_write_errors
from nnunet_iph.parallel import progress_bar
from nnunet_iph.postprocessing.brain import BrainSource
from nnunet_iph.postprocessing.operations import PostprocessingConfig, apply_postprocessing

RESTRICT = PostprocessingConfig(restrict_to_brain=True)

#: the default grid: small-component removal, largest component(s), holes, 1-voxel opening/closing
DEFAULT_GRID: tuple[dict[str, Any], ...] = (
    {"min_volume_ml": 0.05}, {"min_volume_ml": 0.1}, {"min_volume_ml": 0.5}, {"min_volume_ml": 1.0},
    {"keep_largest": 1}, {"keep_largest": 2},
    {"fill_holes": "2d"}, {"fill_holes": "3d"},
    {"opening_radius": 1, "radius_unit": "voxel"}, {"closing_radius": 1, "radius_unit": "voxel"},
)

REPORT_METRICS = ("dice", "hd95_mm", "assd_mm", "recall", "precision", "lesions_false_positive")


@dataclass
class _Case:
    name: str
    ref: np.ndarray
    pred: np.ndarray
    spacing: tuple[float, ...]
    shape: tuple[int, ...]
    brain: np.ndarray | None = None  # the intracranial mask inside the box


@dataclass
class ChoiceResult:
    chosen: PostprocessingConfig
    metric: str
    baseline: float
    best: float
    candidates: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    before: pd.DataFrame | None = None
    after: pd.DataFrame | None = None
    brain: dict[str, Any] | None = None  # what the restriction to the brain removes (brain masks given)

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "direction": metric_direction(self.metric),
                "objective": f"mean {objective_name(self.metric)}", "baseline_mean": _num(self.baseline),
                "chosen_mean": _num(self.best),
                "chosen": self.chosen.to_dict(), "chosen_description": self.chosen.describe(),
                "steps": self.steps, "candidates": self.candidates, "brain_restriction": self.brain}


def _num(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def _score(rows: list[dict[str, Any]], metric: str) -> float:
    """The mean objective (``|rvd|`` for closest-to-0 metrics) over the finite values."""
    v = objective_values(metric, [r[metric] for r in rows])
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan


def _load_cases(ref_dir, pred_dir, file_ending, subset, margin_mm: float, margin_vox: int, progress: bool,
                values: LabelValues, brain: BrainSource | None) -> tuple[list[_Case], list[dict[str, Any]]]:
    """The cases cropped to their foreground box, and what restricting each to the brain removes."""
    from nnunet_iph.imageio import read_image

    pairs = pair_cases(ref_dir, pred_dir, file_ending, subset)
    cases, restriction = [], []
    bar = progress_bar(len(pairs), progress, "load")
    for case, r_path, p_path in pairs:
        ref, pred, spacing = read_pair(r_path, p_path, values)
        mask = brain.load(case, read_image(p_path, "prediction"), p_path) if brain is not None else None
        if mask is not None:
            restriction.append({"case": case, **mask.summary(int(((pred != 0) & ~mask.inside).sum()))})
        margin = [max(margin_vox, math.ceil(margin_mm / s)) + 1 for s in spacing]
        box = M.union_bbox(M.nonzero_bbox(ref), M.nonzero_bbox(pred))
        if box is None:
            box = (slice(0, 0),) * ref.ndim
        else:
            box = tuple(slice(max(0, b.start - m), min(n, b.stop + m)) for b, m, n in zip(box, margin, ref.shape))
        cases.append(_Case(case, ref[box].copy(), pred[box].copy(), spacing, ref.shape,
                           None if mask is None else mask.inside[box].copy()))
        bar.update(1)
    bar.close()
    return cases, restriction


def _restriction_summary(brain: BrainSource, rows: list[dict[str, Any]]) -> dict[str, Any]:
    changed = [r["case"] for r in rows if r["removed_outside_brain"]]
    return {"source": brain.describe(), "removed_voxels": int(sum(r["removed_outside_brain"] for r in rows)),
            "cases_changed": changed, "passed_through": [r["case"] for r in rows if r["brain_passed_through"]],
            "cases": rows}


def _with_restriction(configs: list[PostprocessingConfig], brain: BrainSource | None) -> list[PostprocessingConfig]:
    """The grid plus the restriction alone and on top of each candidate (unless the grid has it already)."""
    restricting = [c for c in configs if c.restrict_to_brain]
    if brain is None:
        if restricting:
            raise ValueError(f"candidate '{restricting[0].describe()}' restricts to the brain: give the brain "
                             "masks (--brain-masks) or the CT images (--images)")
        return configs
    if restricting:
        return configs
    combined = [m for m in (c.merged(RESTRICT) for c in configs) if m is not None]
    return list(dict.fromkeys([*configs, RESTRICT, *combined]))


def _evaluate(cases: list[_Case], config: PostprocessingConfig | None, labels, metric_kwargs
              ) -> list[dict[str, Any]]:
    rows = []
    for c in cases:
        pred = (c.pred if config is None or config.is_identity
                else apply_postprocessing(c.pred, c.spacing, config, brain=c.brain))
        for row in M.box_metrics(c.ref, pred, c.spacing, c.shape, labels, **metric_kwargs):
            rows.append({"case": c.name, **row})
    return rows


def choose_postprocessing(ref_dir: str | os.PathLike, pred_dir: str | os.PathLike, *,
                          output_dir: str | os.PathLike | None = None, metric: str = "dice",
                          grid: Sequence[dict[str, Any] | PostprocessingConfig] | None = None,
                          greedy: bool = True, min_improvement: float = 0.0,
                          labels: Sequence[int | str] | None = None, file_ending: str | None = None,
                          subset: bool = False, surface: str = M.DEFAULT_SURFACE,
                          nsd_tolerance_mm: float = M.DEFAULT_NSD_TOLERANCE_MM,
                          hd95_variant: str = M.DEFAULT_HD95_VARIANT, percentile: float = M.DEFAULT_PERCENTILE,
                          empty_penalty: str = M.DEFAULT_EMPTY_PENALTY, dataset_json: str | os.PathLike | None = None,
                          threshold: float | None = None, map_labels: Sequence[str] | None = None,
                          progress: bool = True, brain: BrainSource | None = None) -> ChoiceResult:
    """Pick the post-processing that improves the mean ``metric`` most (or none).

    ``brain``: where each case's intracranial mask comes from; adds the restriction to the brain to
    the grid (alone and combined) and reports what it removes.

    ``output_dir`` receives ``postprocessing.json`` (choice, every candidate's mean),
    ``postprocessing_cases.csv`` (per case and label, before and after) and ``postprocessing.md``;
    it is checked before any image is read. Labels and non-label images are handled as by
    ``evaluate`` (:func:`nnunet_iph.analysis.evaluate.resolve_labels`).
    """
    metric_kwargs = {"surface": surface, "nsd_tolerance_mm": nsd_tolerance_mm, "hd95_variant": hd95_variant,
                     "percentile": percentile, "empty_penalty": empty_penalty}
    M.check_options(surface, hd95_variant, empty_penalty, percentile, nsd_tolerance_mm)
    allowed = scored_metrics(nsd_tolerance_mm)
    if metric not in allowed:
        raise ValueError(f"metric {metric!r} is not one of {', '.join(allowed)}")
    if output_dir is not None:
        check_output_dir(output_dir, "output folder")
    configs = [g if isinstance(g, PostprocessingConfig) else PostprocessingConfig.from_dict(g)
               for g in (grid if grid is not None else DEFAULT_GRID)]
    configs = _with_restriction(configs, brain)
    parsed_labels, values = resolve_labels(ref_dir, labels, dataset_json, map_labels, threshold)
    margin_mm = max([(c.closing_radius or 0) for c in configs if c.radius_unit == "mm"] + [0])
    margin_vox = max([int(math.ceil(c.closing_radius or 0)) for c in configs if c.radius_unit == "voxel"] + [0])
    cases, restriction = _load_cases(ref_dir, pred_dir, file_ending, subset, margin_mm, margin_vox, progress,
                                     values, brain)
    if parsed_labels is None:
        found = sorted({int(v) for c in cases for v in np.union1d(np.unique(c.ref), np.unique(c.pred)) if v != 0})
        parsed_labels = found or [1]
    sign = objective_sign(metric)

    baseline_rows = _evaluate(cases, None, parsed_labels, metric_kwargs)
    baseline = _score(baseline_rows, metric)
    scores: dict[PostprocessingConfig, float] = {}

    def score(cfg: PostprocessingConfig) -> float:
        if cfg not in scores:
            scores[cfg] = _score(_evaluate(cases, cfg, parsed_labels, metric_kwargs), metric)
        return scores[cfg]

    bar = progress_bar(len(configs), progress, "candidates")
    candidates = []
    for cfg in configs:
        s = score(cfg)
        candidates.append({"config": cfg.to_dict(), "description": cfg.describe(), "mean": _num(s),
                           "delta": _num(s - baseline)})
        bar.update(1)
    bar.close()

    def better(a: float, b: float) -> bool:
        return math.isfinite(a) and (not math.isfinite(b) or sign * (a - b) > min_improvement)

    chosen, best = PostprocessingConfig(), baseline
    steps: list[dict[str, Any]] = []
    pool = list(configs)
    while pool:
        trials = [(cfg if chosen.is_identity else chosen.merged(cfg)) for cfg in pool]
        trials = [t for t in trials if t is not None]
        if not trials:
            break
        top = max(trials, key=lambda t: (sign * score(t) if math.isfinite(score(t)) else -math.inf))
        if not better(score(top), best):
            break
        steps.append({"config": top.to_dict(), "description": top.describe(), "mean": _num(score(top)),
                      "improvement": _num(sign * (score(top) - best))})
        chosen, best = top, score(top)
        if not greedy:
            break
        pool = [cfg for cfg in pool if chosen.merged(cfg) is not None]
    after_rows = baseline_rows if chosen.is_identity else _evaluate(cases, chosen, parsed_labels, metric_kwargs)
    result = ChoiceResult(chosen, metric, baseline, best, candidates, steps,
                          pd.DataFrame(baseline_rows), pd.DataFrame(after_rows),
                          _restriction_summary(brain, restriction) if brain is not None else None)
    if output_dir is not None:
        write_choice(result, output_dir, nsd_tolerance_mm, info={"ref_dir": str(ref_dir), "pred_dir": str(pred_dir),
                                                                "options": metric_kwargs,
                                                                "labels": [M.label_name(v) for v in parsed_labels]})
    return result


def before_after_table(result: ChoiceResult, nsd_tolerance_mm: float = M.DEFAULT_NSD_TOLERANCE_MM
                       ) -> pd.DataFrame:
    """Per label and metric: mean before, mean after, difference, and cases improved / worsened."""
    metrics = list(dict.fromkeys([result.metric, *REPORT_METRICS, M.nsd_column(nsd_tolerance_mm)]))
    rows = []
    b, a = result.before, result.after
    for label in b["label"].unique():
        bb, aa = b[b["label"] == label].reset_index(drop=True), a[a["label"] == label].reset_index(drop=True)
        for m in metrics:
            if m not in bb:
                continue
            x, y = bb[m].to_numpy(float), aa[m].to_numpy(float)
            ok = np.isfinite(x) & np.isfinite(y)
            gain = objective_sign(m) * (objective_values(m, y[ok]) - objective_values(m, x[ok]))
            rows.append({"label": label, "metric": m, "before": float(np.mean(x[ok])) if ok.any() else math.nan,
                         "after": float(np.mean(y[ok])) if ok.any() else math.nan,
                         "difference": float(np.mean(y[ok] - x[ok])) if ok.any() else math.nan,
                         "cases_improved": int((gain > 0).sum()), "cases_worse": int((gain < 0).sum())})
    return pd.DataFrame(rows)


def write_choice(result: ChoiceResult, output_dir: str | os.PathLike,
                 nsd_tolerance_mm: float = M.DEFAULT_NSD_TOLERANCE_MM, info: dict[str, Any] | None = None) -> Path:
    from nnunet_iph.imageio import write_csv, write_json, write_text

    out = check_output_dir(output_dir, "output folder")
    table = before_after_table(result, nsd_tolerance_mm)
    per_case = result.before.merge(result.after, on=["case", "label"], suffixes=("_before", "_after"))
    keep = ["case", "label"] + [c for m in dict.fromkeys([result.metric, *REPORT_METRICS])
                                for c in (f"{m}_before", f"{m}_after") if c in per_case]
    if result.brain is not None:
        removed = pd.DataFrame(result.brain["cases"])[["case", "removed_outside_brain", "brain_passed_through"]]
        per_case = per_case.merge(removed, on="case", how="left")
        keep += ["removed_outside_brain", "brain_passed_through"]
    with reporting_write_errors("the post-processing choice"):
        out.mkdir(parents=True, exist_ok=True)
        write_csv(per_case[keep], out / "postprocessing_cases.csv")
        write_text(format_choice(result, table), out / "postprocessing.md")
        write_json(_json_safe({**result.to_dict(), "before_after": table.to_dict(orient="records"),
                               **(info or {})}), out / "postprocessing.json")
    return out / "postprocessing.json"


def _names(cases: list[str], limit: int = 20) -> str:
    return ", ".join(cases[:limit]) + (f", ... ({len(cases) - limit} more)" if len(cases) > limit else "")


def format_choice(result: ChoiceResult, table: pd.DataFrame | None = None) -> str:
    table = before_after_table(result) if table is None else table
    name = objective_name(result.metric)
    lines = [f"# Post-processing choice (mean {name}, {DIRECTION_TEXT[metric_direction(result.metric)]})", "",
             f"Chosen: **{result.chosen.describe()}** — mean {name} {result.baseline:.4f} -> {result.best:.4f}",
             ""]
    if result.brain is not None:
        b = result.brain
        lines += [f"Restriction to the brain ({b['source']}): removes {b['removed_voxels']} predicted voxel(s) in "
                  f"{len(b['cases_changed'])} of {len(b['cases'])} case(s)"
                  + (f" ({_names(b['cases_changed'])})" if b["cases_changed"] else "")
                  + (f"; {len(b['passed_through'])} passed through (all-ones mask, unchanged): "
                     f"{_names(b['passed_through'])}" if b["passed_through"] else ""), ""]
    lines += ["| candidate | mean | change |", "|---|---|---|"]
    for c in result.candidates:
        mean = "n/a" if c["mean"] is None else f"{c['mean']:.4f}"
        delta = "n/a" if c["delta"] is None else f"{c['delta']:+.4f}"
        lines.append(f"| {c['description']} | {mean} | {delta} |")
    lines += ["", "Before / after (mean over cases):", "",
              "| label | metric | before | after | difference | cases improved | cases worse |",
              "|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.label} | {r.metric} | {r.before:.4f} | {r.after:.4f} | {r.difference:+.4f} | "
                     f"{r.cases_improved} | {r.cases_worse} |")
    return "\n".join(lines) + "\n"


__all__ = ["DEFAULT_GRID", "RESTRICT", "ChoiceResult", "choose_postprocessing", "before_after_table", "write_choice",
           "format_choice"]
