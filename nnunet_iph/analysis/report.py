"""The analysis report: statistics, tables and figures for a tidy per-case table, in one folder.

``OUT/`` receives ``per_case.csv`` (the analysed table), ``tables/`` (Markdown, LaTeX, CSV per
metric), ``figures/`` (PNG), ``report.md`` and ``report.html`` (figures embedded by relative path)
and ``results.json`` (every number in the report, the messages, the settings and the package
versions). The report is built once as a list of blocks and rendered to both formats, so the
Markdown and HTML always say the same. Each section of the analysis of one split x label is one
function (``_section_*``), run in the order of ``_SECTIONS``.
"""

from __future__ import annotations

import datetime as _dt
import html
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from nnunet_iph.analysis import figures, metric_table, stats, tables
from nnunet_iph.environment import package_versions
from nnunet_iph.imageio import write_csv, write_json, write_text

#: metrics analysed by default, in report order (those present in the table are used)
DEFAULT_METRICS = metric_table.report_metrics()
#: metrics that also get per-site / per-volume-bin tables and box plots
PRIMARY_METRICS = ("dice", "hd95_mm")

@dataclass
class AnalysisSettings:
    metrics: Sequence[str] | None = None
    seed: int = 0
    n_boot: int = 2000
    failure_threshold: float = 0.5
    volume_tolerance_ml: float = 5.0
    volume_edges: Sequence[float] = stats.DEFAULT_VOLUME_BINS
    overlay_cases: Sequence[str] | None = None
    n_overlays: int = 3
    images_dir: str | None = None
    test_images_dir: str | None = None
    title: str = "nnU-Net intracranial hemorrhage segmentation: analysis"
    messages: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# formatting

def fmt(x: Any, digits: int = 3) -> str:
    """Numbers for humans: NaN -> '–', ints as ints, small/large floats in scientific notation."""
    if x is None:
        return "–"
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(v):
        return "–"
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if v != 0 and (abs(v) < 10 ** -digits or abs(v) >= 1e6):
        return f"{v:.{max(digits - 1, 1)}e}"
    return f"{v:.{digits}f}"


def fmt_p(p: Any) -> str:
    try:
        v = float(p)
    except (TypeError, ValueError):
        return "–"
    if math.isnan(v):
        return "–"
    return "<0.001" if v < 0.001 else f"{v:.3f}"


# --------------------------------------------------------------------------------------------
# a tiny document model rendered to Markdown and HTML

@dataclass
class Doc:
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", (level, text)))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def ul(self, items: Sequence[str]) -> None:
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]], bold: Sequence[Sequence[bool]] | None = None,
              caption: str | None = None) -> None:
        self.blocks.append(("table", ([str(h) for h in header], [[str(c) for c in r] for r in rows], bold, caption)))

    def img(self, rel_path: str, alt: str) -> None:
        self.blocks.append(("img", (rel_path, alt)))

    def to_markdown(self) -> str:
        out = []
        for kind, val in self.blocks:
            if kind == "h":
                out.append("#" * val[0] + " " + val[1])
            elif kind == "p":
                out.append(val)
            elif kind == "ul":
                out.append("\n".join(f"- {i}" for i in val))
            elif kind == "img":
                out.append(f"![{val[1]}]({val[0]})")
            elif kind == "table":
                header, rows, bold, caption = val
                esc = lambda s: s.replace("|", "\\|").replace("\n", " ")  # noqa: E731
                lines = ["| " + " | ".join(esc(h) for h in header) + " |",
                         "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
                for i, r in enumerate(rows):
                    cells = [f"**{esc(c)}**" if bold and bold[i][j] else esc(c) for j, c in enumerate(r)]
                    lines.append("| " + " | ".join(cells) + " |")
                out.append("\n".join(lines) + (f"\n\n*{caption}*" if caption else ""))
        return "\n\n".join(out) + "\n"

    def to_html(self, title: str) -> str:
        e = html.escape
        body = []
        for kind, val in self.blocks:
            if kind == "h":
                body.append(f"<h{val[0]}>{e(val[1])}</h{val[0]}>")
            elif kind == "p":
                body.append(f"<p>{_inline_html(val)}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in val) + "</ul>")
            elif kind == "img":
                body.append(f'<figure><img src="{e(val[0])}" alt="{e(val[1])}"><figcaption>{e(val[1])}'
                            "</figcaption></figure>")
            elif kind == "table":
                header, rows, bold, caption = val
                t = ["<table>", "<thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr></thead><tbody>"]
                for i, r in enumerate(rows):
                    cells = [f"<td><b>{e(c)}</b></td>" if bold and bold[i][j] else f"<td>{e(c)}</td>"
                             for j, c in enumerate(r)]
                    t.append("<tr>" + "".join(cells) + "</tr>")
                t.append("</tbody></table>")
                if caption:
                    t.append(f'<p class="caption">{_inline_html(caption)}</p>')
                body.append("".join(t))
        style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
                 "table{border-collapse:collapse;margin:0.5em 0;font-size:0.9em}"
                 "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}"
                 "th:first-child,td:first-child{text-align:left}th{background:#f2f2f2}"
                 "img{max-width:100%}figure{margin:1em 0}figcaption,.caption{font-size:0.85em;color:#555}"
                 "code{background:#f4f4f4;padding:0 3px}")
        return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{e(title)}</title>"
                f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _inline_html(text: str) -> str:
    """Escape, then the little Markdown used in paragraphs: **bold**, `code`, *emphasis*."""
    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
    t = re.sub(r"`(.+?)`", r"<code>\1</code>", t)
    return re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<i>\1</i>", t)


# --------------------------------------------------------------------------------------------
# helpers

def select_metrics(table: pd.DataFrame, wanted: Sequence[str] | None = None) -> list[str]:
    """Metric columns to analyse: ``wanted`` (all must exist) or the defaults present with values."""
    if wanted:
        missing = [m for m in wanted if m not in table.columns]
        if missing:
            raise ValueError(f"metric(s) {missing} not in the per-case table (have: {', '.join(table.columns)})")
        return list(wanted)
    out = []
    for m in DEFAULT_METRICS:
        cands = sorted(c for c in table.columns if c.startswith("nsd_") and c.endswith("mm")) if m == "nsd_*" else [m]
        out += [c for c in cands if c in table.columns and pd.to_numeric(table[c], errors="coerce").notna().any()]
    if not out:
        raise ValueError(f"no known metric columns in the per-case table (have: {', '.join(table.columns)})")
    return out


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("_") or "x"


def _rel(path: Path | None, root: Path) -> str | None:
    return None if path is None else os.path.relpath(path, root).replace(os.sep, "/")


def _mean_sd(describe_row: pd.Series, digits: int) -> str:
    m, s = describe_row["mean"], describe_row["sd"]
    if not np.isfinite(m):
        return "–"
    return f"{m:.{digits}f} ± {s:.{digits}f}" if np.isfinite(s) else f"{m:.{digits}f}"


# --------------------------------------------------------------------------------------------
# the analysis of one split x label

def _overlay_candidates(sub: pd.DataFrame, settings: AnalysisSettings, metric: str) -> list[tuple[str, pd.Series]]:
    """(system, row) pairs to draw: the best system's best / median / worst case, or chosen cases."""
    if "prediction_file" not in sub.columns or "reference_file" not in sub.columns:
        return []
    direction = stats.metric_direction(metric)

    def score(values: pd.Series) -> pd.Series:  # 'zero' (rvd): closest to 0 is best
        v = pd.to_numeric(values, errors="coerce")
        return v.abs() if direction == "zero" else v

    smaller_is_better = direction in ("lower", "zero")
    means = sub.groupby("system", sort=False)[metric].apply(lambda v: np.nanmean(score(v)))
    if means.isna().all():
        return []
    best = means.idxmin() if smaller_is_better else means.idxmax()
    cand = sub[sub["system"] == best].copy()
    if settings.overlay_cases:
        chosen = cand[cand["case"].isin([str(c) for c in settings.overlay_cases])]
        return [(best, r) for _, r in chosen.iterrows()]
    cand["_v"] = score(cand[metric])
    if "empty_ref" in cand.columns:  # an empty reference makes a dull picture
        nonempty = cand[~cand["empty_ref"].fillna(False).astype(bool)]
        cand = nonempty if len(nonempty) else cand
    cand = cand[np.isfinite(cand["_v"])].sort_values("_v", ascending=smaller_is_better)
    if not len(cand):
        return []
    picks = [0, len(cand) // 2, len(cand) - 1][: settings.n_overlays]
    rows = [cand.iloc[i] for i in dict.fromkeys(picks)]
    return [(best, r) for r in rows]


def _image_for(row: pd.Series, split: str, settings: AnalysisSettings) -> Path | None:
    explicit = settings.test_images_dir if split == "test" else settings.images_dir
    folders = [Path(explicit)] if explicit else []
    raw = os.environ.get("nnUNet_raw")
    if raw and row.get("dataset"):
        folders.append(Path(raw) / str(row["dataset"]) / ("imagesTs" if split == "test" else "imagesTr"))
    ending = "".join(Path(str(row["reference_file"])).suffixes) or ".nii.gz"
    for folder in folders:
        cand = folder / f"{row['case']}_0000{ending}"
        if cand.is_file():
            return cand
    return None


@dataclass
class _Subset:
    """What every section of the report of one split x label reads and writes."""

    sub: pd.DataFrame
    metrics: Sequence[str]
    settings: AnalysisSettings
    out_dir: Path
    tag: str
    doc: Doc
    res: dict[str, Any]

    @property
    def systems(self) -> list[str]:
        return self.res["systems"]

    @property
    def fig_dir(self) -> Path:
        return self.out_dir / "figures"

    @property
    def tab_dir(self) -> Path:
        return self.out_dir / "tables"

    def result(self, metric: str) -> dict[str, Any]:
        """:func:`stats.analyze_metric`'s result for ``metric``."""
        return self.res["metrics"][metric]

    def primary_metrics(self) -> list[str]:
        """Metrics that get subgroup tables and box plots: the primary ones analysed, else the first."""
        return [m for m in PRIMARY_METRICS if m in self.metrics] or list(self.metrics[:1])


def _section_intro(s: _Subset, heading: str) -> None:
    s.doc.h(2, heading)
    s.doc.p(f"{len(s.systems)} system(s), {s.res['n_cases']} case(s). Systems: "
            + ", ".join(f"`{x}`" for x in s.systems) + ".")
    if len(s.systems) > 1:
        counts = s.sub.groupby("system")["case"].nunique()
        if counts.nunique() > 1:
            s.res["messages"].append("systems were scored on different numbers of cases: " +
                                     ", ".join(f"{x}: {n}" for x, n in counts.items()) +
                                     "; unpaired tests use all cases, paired tests the common ones")


def _compute_statistics(s: _Subset) -> None:
    """Every number of the statistics sections; systems left out of a test are named in the notes."""
    for metric in s.metrics:
        s.res["metrics"][metric] = stats.analyze_metric(
            s.sub, metric, model_col="system", case_col="case", site_col="site", volume_col="reference_volume_ml",
            n_boot=s.settings.n_boot, seed=s.settings.seed, volume_edges=s.settings.volume_edges)
        for e in s.result(metric)["excluded_systems"]:
            s.res["excluded_systems"].append({"metric": metric, **e})
            s.res["messages"].append(f"{metric}: `{e['system']}` left out of {', '.join(e['tests'])} "
                                     f"({e['reason']})")


def _section_summary(s: _Subset) -> None:
    s.doc.h(3, "Summary per system")
    s.doc.p("Mean ± SD over cases with a finite value; *non-finite* counts the cases where the metric is "
            "undefined or infinite (e.g. a distance with an empty mask), which are excluded from mean ± SD "
            "and from the tests, never silently."
            + (f" Empty masks: {metric_table.empty_rule('dice')}." if "dice" in s.metrics else ""))
    header = ["metric", "system", "n", "mean ± SD", "median [IQR]", "non-finite"]
    has_empty = "n_empty_ref" in s.result(s.metrics[0])["describe"].columns
    if has_empty:
        header += ["empty ref", "empty pred"]
    rows = []
    for metric in s.metrics:
        digits = tables.default_decimals(metric)
        for _, r in s.result(metric)["describe"].iterrows():
            row = [metric, r["system"], fmt(r["n_finite"]), _mean_sd(r, digits),
                   f"{fmt(r['median'], digits)} [{fmt(r['q1'], digits)}, {fmt(r['q3'], digits)}]",
                   fmt(int(r["n_nan"] + r["n_inf"]))]
            if has_empty:
                row += [fmt(r.get("n_empty_ref")), fmt(r.get("n_empty_pred"))]
            rows.append(row)
    s.doc.table(header, rows)


def _section_tables(s: _Subset) -> None:
    s.doc.h(3, "Tables (reference-study layout)")
    s.doc.p("Rows: plans / configuration; columns: model; cells: mean ± SD; best per row in **bold**. "
            "Markdown, LaTeX and CSV versions are in `tables/`.")
    for metric in s.metrics:
        t = tables.build_table(s.sub, metric, row_col="row", col_col="model")
        paths = tables.write_table(t, s.tab_dir, f"{s.tag}_{metric}")
        s.res["tables"][metric] = {"files": {k: _rel(v, s.out_dir) for k, v in paths.items()},
                                   "cells": tables.to_long(t)}
        s.doc.table([f"{metric} — row"] + list(t.cells.columns),
                    [[r] + list(t.cells.loc[r]) for r in t.cells.index],
                    bold=[[False] + list(t.best.loc[r]) for r in t.best.index],
                    caption=tables._caption(t) + ("" if not t.notes else " " + "; ".join(t.notes)))


def _section_reference_statistics(s: _Subset) -> None:
    """The reference study's ANOVA, unpaired t-tests and per-model OLS."""
    s.doc.h(3, "Statistics of the reference study")
    s.doc.p("One-way ANOVA across systems and unpaired (Welch) t-tests with Bonferroni correction, as in the "
            "reference study. Both treat the systems as independent samples although every system is scored "
            "on the same patients; see the paired statistics below.")
    anova_rows = []
    for metric in s.metrics:
        a = s.result(metric)["anova"]
        anova_rows.append([metric, f"F({fmt(a['df_between'])}, {fmt(a['df_within'])}) = {fmt(a['F'])}",
                           fmt_p(a["p"]), fmt(a.get("eta_squared")), "; ".join(a["messages"])])
    s.doc.table(["metric", "ANOVA F(df between, df within)", "p", "η²", "notes"], anova_rows)
    if len(s.systems) > 1:
        rows, notes = [], []
        for metric in s.metrics:
            for _, r in s.result(metric)["pairwise_t"].iterrows():
                rows.append([metric, f"{r['a']} vs {r['b']}", fmt(r["mean_a"]), fmt(r["mean_b"]),
                             f"t({fmt(r['df'], 1)}) = {fmt(r['t'])}", fmt_p(r["p"]), fmt_p(r["p_bonferroni"])])
                if r["message"]:
                    notes.append(f"{metric}, {r['a']} vs {r['b']}: {r['message']}")
        s.doc.table(["metric", "pair", "mean a", "mean b", "Welch t", "p", "p (Bonferroni)"], rows)
        s.doc.ul(notes)
    _ols_table(s)


def _ols_table(s: _Subset) -> None:
    s.doc.p("Per-model OLS `metric ~ reference_volume + age + C(sex) + C(site)` (terms that cannot be estimated "
            "are dropped, with the reason):")
    ols_rows, ols_notes = [], {}
    for metric in s.metrics:
        for fit in s.result(metric)["ols"]:
            coefs = "; ".join(f"{c['term']} {fmt(c['coef'])} (p {fmt_p(c['p'])})" for c in fit["coefficients"]
                              if c["term"] != "Intercept")
            terms = fit["formula"].split("~", 1)[1].strip() if fit["formula"] else "–"
            ols_rows.append([metric, fit["system"], terms, fmt(fit["n"]), fmt(fit["r2"]), fmt_p(fit["f_pvalue"]),
                             coefs or "–"])
            for m in fit["messages"]:
                ols_notes.setdefault(m, []).append(f"{metric} / {fit['system']}")
    s.doc.table(["metric", "system", "terms", "n", "R²", "p (F)", "coefficients (p)"], ols_rows)
    n_fits = len(s.metrics) * len(s.systems)
    s.doc.ul([f"{m} ({'all models and metrics' if len(w) == n_fits else ', '.join(w)})"
              for m, w in ols_notes.items()])


def _section_paired(s: _Subset) -> None:
    s.doc.h(3, "Paired statistics (recommended)")
    if len(s.systems) < 2:
        s.doc.p("Only one system: nothing to compare.")
        return
    s.doc.p(f"Differences a − b on the cases both systems scored. 95% CI: percentile bootstrap of the mean "
            f"difference ({s.settings.n_boot} resamples, seed {s.settings.seed}). p-values adjusted over all pairs "
            "(Holm; Bonferroni in results.json and the CSV).")
    rows, notes = [], []
    for metric in s.metrics:
        for _, r in s.result(metric)["paired"].iterrows():
            rows.append([metric, f"{r['a']} − {r['b']}", fmt(r["n_pairs"]), fmt(r["mean_diff"]),
                         f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]", fmt_p(r["p_t"]), fmt_p(r["p_t_holm"]),
                         fmt_p(r["p_wilcoxon"]), fmt_p(r["p_wilcoxon_holm"])])
            if r["message"]:
                notes.append(f"{metric}, {r['a']} − {r['b']}: {r['message']}")
        write_csv(s.result(metric)["paired"], s.tab_dir / f"{s.tag}_{metric}_paired.csv")
    s.doc.table(["metric", "difference", "n", "mean diff", "95% CI", "paired t p", "p (Holm)",
                 "Wilcoxon p", "p (Holm)"], rows)
    s.doc.ul(notes)
    _mixed_model_table(s)


def _mixed_model_table(s: _Subset) -> None:
    s.doc.p("Linear mixed model `metric ~ C(system) + (1 | patient)` (REML, statsmodels MixedLM); "
            "coefficients are differences from the reference system; Wald χ² tests all system effects at once.")
    rows, notes = [], []
    for metric in s.metrics:
        for key in ("mixed_model", "mixed_model_site"):
            mm = s.result(metric).get(key)
            if not mm:
                continue
            notes += [f"{metric} ({'site-adjusted' if key.endswith('site') else 'patient'} model): {m}"
                      for m in mm["messages"]]
            if "fixed_effects" not in mm:
                continue
            eff = "; ".join(f"{f['term']} {fmt(f['coef'])} [{fmt(f['ci_low'])}, {fmt(f['ci_high'])}] "
                            f"p {fmt_p(f['p'])}" for f in mm["fixed_effects"] if f["term"] != "Intercept")
            rows.append([metric, mm["formula"], fmt(mm["n_obs"]), fmt(mm["n_groups"]), eff,
                         f"χ²({mm['wald_df']}) = {fmt(mm['wald_chi2'])}, p {fmt_p(mm['wald_p'])}",
                         fmt(mm["patient_var"]), fmt(mm["residual_var"]), fmt(mm["converged"])])
    s.doc.table(["metric", "model", "obs", "patients", "effects vs reference [95% CI]", "Wald test",
                 "patient var", "residual var", "converged"], rows)
    s.doc.ul(list(dict.fromkeys(notes)))


def _section_volume_agreement(s: _Subset) -> None:
    if not {"volume_pred_ml", "reference_volume_ml"} <= set(s.sub.columns):
        return
    tol = s.settings.volume_tolerance_ml
    va = stats.volume_agreement_by_system(s.sub, tolerance_ml=tol)
    s.res["volume_agreement"] = va
    s.doc.h(3, "Volume agreement")
    s.doc.p(f"Predicted vs reference hemorrhage volume (difference = predicted − reference). ICC(2,1): two-way "
            f"random effects, absolute agreement, single measure (penalises systematic bias); ICC(3,1): "
            f"consistency. Within {tol:g} mL: share of cases with |difference| ≤ {tol:g} mL.")
    s.doc.table(["system", "n", "Pearson r", "ICC(2,1)", "ICC(3,1)", "RMSE (mL)", "mean diff (mL)",
                 f"% within {tol:g} mL", "Bland-Altman bias", "95% limits"],
                [[r["system"], fmt(r["n"]), fmt(r["pearson_r"]), fmt(r["icc2_1"]), fmt(r["icc3_1"]),
                  fmt(r["rmse_ml"], 2), fmt(r["mean_diff_ml"], 2), fmt(r["pct_within_tolerance"], 1),
                  fmt(r["ba_bias_ml"], 2), f"[{fmt(r['ba_loa_low_ml'], 2)}, {fmt(r['ba_loa_high_ml'], 2)}]"]
                 for _, r in va.iterrows()])
    write_csv(va, s.tab_dir / f"{s.tag}_volume_agreement.csv")


def _section_failures(s: _Subset) -> None:
    if "dice" not in s.sub.columns:
        return
    fr = stats.failure_rate(s.sub, "dice", s.settings.failure_threshold)
    s.res["failure_rate"] = fr
    s.doc.h(3, f"Failure rate (Dice < {s.settings.failure_threshold:g})")
    s.doc.table(["system", "n", "failures", "rate", "95% CI (Wilson)", "Dice undefined"],
                [[r["system"], fmt(r["n"]), fmt(r["n_failures"]), fmt(r["failure_rate"]),
                  f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]", fmt(r["n_undefined"])] for _, r in fr.iterrows()])


def _section_lesions(s: _Subset) -> None:
    lesion_cols = ["n_lesions_ref", "lesions_detected", "lesions_missed", "lesions_false_positive"]
    if not set(lesion_cols) <= set(s.sub.columns):
        return
    les = s.sub.groupby("system", sort=False)[lesion_cols].apply(
        lambda g: g.apply(pd.to_numeric, errors="coerce").sum()).reset_index()
    les["lesion_sensitivity"] = les["lesions_detected"] / les["n_lesions_ref"].where(les["n_lesions_ref"] > 0)
    s.res["lesion_detection"] = les
    s.doc.h(3, "Lesion-wise detection")
    s.doc.p("Connected components summed over cases; sensitivity = detected / reference lesions.")
    s.doc.table(["system", "reference lesions", "detected", "missed", "false-positive lesions", "sensitivity"],
                [[r["system"], fmt(r["n_lesions_ref"]), fmt(r["lesions_detected"]), fmt(r["lesions_missed"]),
                  fmt(r["lesions_false_positive"]), fmt(r["lesion_sensitivity"])] for _, r in les.iterrows()])


def _section_subgroups(s: _Subset) -> None:
    s.doc.h(3, "By site and by reference volume")
    for metric in s.primary_metrics():
        digits = tables.default_decimals(metric)
        for key, label in (("by_site", "site"), ("by_volume_bin", "volume_bin")):
            if key not in s.result(metric):
                continue
            g = s.result(metric)[key]
            write_csv(g, s.tab_dir / f"{s.tag}_{metric}_{key}.csv")
            if not len(g):
                continue
            groups = list(dict.fromkeys(g[label]))
            if label == "volume_bin":  # category order, not first appearance
                order = stats.volume_bins(pd.Series([0.0]), s.settings.volume_edges).cat.categories
                groups = [c for c in order if c in set(g[label])]
            rows = []
            for grp in groups:
                gg = g[g[label] == grp]
                cells = {r["system"]: f"{_mean_sd(r, digits)} (n={fmt(r['n_finite'])})" for _, r in gg.iterrows()}
                rows.append([str(grp)] + [cells.get(sy, "–") for sy in s.systems])
            s.doc.table([label.replace("_", " ")] + s.systems, rows,
                        caption=f"{metric} by {label.replace('_', ' ')}: mean ± SD (n cases with a finite value)")


def _section_figures(s: _Subset) -> None:
    s.doc.h(3, "Figures")
    figs = s.res["figures"]
    # cases without a site are a box of their own, as in the by-site table
    by_site = (s.sub.assign(site=s.sub["site"].where(s.sub["site"].notna(), stats.MISSING_GROUP))
               if "site" in s.sub.columns else s.sub)
    for metric in s.primary_metrics():
        p = figures.box_by_site(by_site, metric, s.fig_dir / f"{s.tag}_box_{metric}_by_site.png")
        figs[f"box_{metric}_by_site"] = _rel(p, s.out_dir)
        s.doc.img(figs[f"box_{metric}_by_site"], f"{metric} by site and model")
    if "dice" in s.metrics:
        p = figures.metric_vs_age(s.sub, "dice", s.fig_dir / f"{s.tag}_dice_vs_age.png")
        if p is None:
            s.res["messages"].append("no ages in cases.csv: Dice-vs-age figure skipped")
        else:
            figs["dice_vs_age"] = _rel(p, s.out_dir)
            s.doc.img(figs["dice_vs_age"], "Dice vs age; marker area ~ reference volume; red over-, blue "
                                           "under-estimated volume")
    if {"volume_pred_ml", "reference_volume_ml"} <= set(s.sub.columns):
        figs["bland_altman"] = _rel(figures.bland_altman(s.sub, s.fig_dir / f"{s.tag}_bland_altman.png"), s.out_dir)
        s.doc.img(figs["bland_altman"], "Bland-Altman plot of hemorrhage volume")
        figs["volume_scatter"] = _rel(figures.volume_scatter(s.sub, s.fig_dir / f"{s.tag}_volume_scatter.png"),
                                      s.out_dir)
        s.doc.img(figs["volume_scatter"], "Predicted vs reference volume")


def _section_overlays(s: _Subset) -> None:
    ov_metric = "dice" if "dice" in s.metrics else s.metrics[0]
    split = str(s.sub["split"].iloc[0]) if "split" in s.sub.columns else "validation"
    for system, row in _overlay_candidates(s.sub, s.settings, ov_metric):
        image = _image_for(row, split, s.settings)
        if image is None:
            s.res["messages"].append(f"no CT image found for case {row['case']}: overlay skipped (pass --images)")
            continue
        name = f"{s.tag}_overlay_{_safe(system)}_{_safe(row['case'])}"
        try:
            p = figures.overlay_case(image, row["reference_file"], row["prediction_file"], s.fig_dir / f"{name}.png",
                                     title=f"{row['case']} ({system}, {ov_metric} {fmt(row[ov_metric])})")
        except (FileNotFoundError, ValueError, RuntimeError) as err:
            s.res["messages"].append(f"overlay of {row['case']} failed: {err}")
            continue
        s.res["figures"][name] = _rel(p, s.out_dir)
        s.doc.img(s.res["figures"][name], f"case {row['case']}, {system}: TP green, FP red, FN blue ({ov_metric} "
                                          f"{fmt(row[ov_metric])})")


def _section_notes(s: _Subset) -> None:
    if s.res["messages"]:
        s.doc.h(3, "Notes")
        s.doc.ul(s.res["messages"])


#: the report of one split x label, section by section, in order
_SECTIONS = (_section_summary, _section_tables, _section_reference_statistics, _section_paired,
             _section_volume_agreement, _section_failures, _section_lesions, _section_subgroups, _section_figures,
             _section_overlays, _section_notes)


def analyze_subset(sub: pd.DataFrame, metrics: Sequence[str], settings: AnalysisSettings, out_dir: Path,
                   tag: str, doc: Doc, heading: str) -> dict[str, Any]:
    """Statistics, tables, figures and report section for one split x label."""
    res: dict[str, Any] = {"n_rows": len(sub), "n_cases": int(sub["case"].nunique()),
                           "systems": list(dict.fromkeys(sub["system"])), "metrics": {}, "tables": {},
                           "figures": {}, "messages": [], "excluded_systems": []}
    s = _Subset(sub, metrics, settings, out_dir, tag, doc, res)
    _section_intro(s, heading)
    _compute_statistics(s)
    for section in _SECTIONS:
        section(s)
    return res


# --------------------------------------------------------------------------------------------
# entry point

def build_report(table: pd.DataFrame, out_dir: str | os.PathLike, settings: AnalysisSettings | None = None) -> dict:
    """Analyse the tidy per-case table and write everything to ``out_dir``; returns results.json's dict."""
    settings = settings or AnalysisSettings()
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"output folder {out_dir} cannot be created ({err.strerror or err})") from None
    if not len(table):
        raise ValueError("the per-case table is empty: nothing to analyse")
    table = table.copy()
    for col, default in (("split", "validation"), ("label", "1"), ("model", "model"), ("row", "-")):
        if col not in table.columns:
            table[col] = default
    if "system" not in table.columns:
        table["system"] = table["model"]
    if "reference_volume_ml" not in table.columns and "volume_ref_ml" in table.columns:
        table["reference_volume_ml"] = table["volume_ref_ml"]
    metrics = select_metrics(table, settings.metrics)
    write_csv(table, out_dir / "per_case.csv")

    doc = Doc()
    doc.h(1, settings.title)
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    doc.p(f"Generated {now} by nnunet-iph {package_versions().get('nnunet-iph')}. Metrics: "
          + ", ".join(f"`{m}`" for m in metrics) + ". Per-case table: `per_case.csv`; every number: "
          "`results.json`; tables in Markdown / LaTeX / CSV: `tables/`; figures: `figures/`.")
    if settings.messages:
        doc.h(3, "Data notes")
        doc.ul(settings.messages)
    results: dict[str, Any] = {"created": now, "versions": package_versions(),
                               "settings": {"metrics": metrics, "seed": settings.seed, "n_boot": settings.n_boot,
                                            "failure_threshold": settings.failure_threshold,
                                            "volume_tolerance_ml": settings.volume_tolerance_ml,
                                            "volume_bins_ml": list(settings.volume_edges),
                                            "covariates": list(stats.DEFAULT_COVARIATES)},
                               "messages": list(settings.messages), "analyses": {}}
    split_names = {"validation": "Cross-validation", "test": "Test set"}
    groups = list(table.groupby(["split", "label"], sort=False))
    for (split, label), sub in groups:
        tag = _safe(f"{split}" + (f"_label{label}" if table["label"].nunique() > 1 else ""))
        heading = split_names.get(str(split), str(split))
        if table["label"].nunique() > 1:
            heading += f" — label {label}"
        res = analyze_subset(sub.reset_index(drop=True), metrics, settings, out_dir, tag, doc, heading)
        results["analyses"][tag] = {"split": split, "label": label, **res}
    doc.h(2, "Software")
    doc.table(["package", "version"], [[k, v or "not installed"] for k, v in results["versions"].items()])
    results["files"] = {"report_md": "report.md", "report_html": "report.html", "per_case": "per_case.csv"}
    write_text(doc.to_markdown(), out_dir / "report.md")
    write_text(doc.to_html(settings.title), out_dir / "report.html")
    results = stats.jsonable(results)
    write_json(results, out_dir / "results.json")
    return results
