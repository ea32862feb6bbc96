"""The benchmark's headline table: one row per model, paired comparisons against the baseline.

Why its own table beside the full analysis report: the question of the benchmark is "what does each
model buy over plain nnU-Net on the same cases", so every model is reported on the same
hemorrhage-positive cases (Dice, HD95, volume error, failure rate), negatives separately (false
positives), and each model is compared with the baseline *paired by case* (Wilcoxon signed-rank and
paired t, Holm-adjusted over the comparisons). The numbers come from the per-case table of
:mod:`nnunet_iph.analysis` (the same scoring as ``nnunet-iph analyze``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from nnunet_iph.analysis import stats

MODEL_COL = "benchmark_model"


def _bool(series: pd.Series) -> pd.Series:
    return series.astype(str).str.lower().isin(("true", "1", "1.0"))


def positives(table: pd.DataFrame) -> pd.DataFrame:
    """Rows whose reference mask is not empty (the hemorrhage-positive cases)."""
    return table[~_bool(table["empty_ref"])]


def negatives(table: pd.DataFrame) -> pd.DataFrame:
    return table[_bool(table["empty_ref"])]


def _mean_sd(values: pd.Series) -> tuple[float, float, int]:
    v = pd.to_numeric(values, errors="coerce").to_numpy(float)
    v = v[np.isfinite(v)]
    if not len(v):
        return np.nan, np.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else np.nan, len(v)


def with_volume_error(table: pd.DataFrame) -> pd.DataFrame:
    """Signed and absolute volume error; NaN columns where a metric was not computed (nnU-Net summary source)."""
    out = table.copy()
    for col in ("hd95_mm", "volume_pred_ml", "volume_ref_ml"):
        if col not in out.columns:
            out[col] = np.nan
    out["volume_error_ml"] = (pd.to_numeric(out["volume_pred_ml"], errors="coerce")
                              - pd.to_numeric(out["volume_ref_ml"], errors="coerce"))
    out["abs_volume_error_ml"] = out["volume_error_ml"].abs()
    return out


def paired_vs_baseline(pos: pd.DataFrame, models: Sequence[str], baseline: str, metric: str,
                       n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Each model vs the baseline on their common cases (a - baseline); Holm over the comparisons."""
    rows = []
    for model in models:
        if model == baseline:
            continue
        pair = pos[pos[MODEL_COL].isin([model, baseline])]
        res = stats.paired_tests(pair, metric, model_col=MODEL_COL, n_boot=n_boot, seed=seed)
        if res.empty:
            rows.append({"model": model, "metric": metric, "n_pairs": 0})
            continue
        r = res.iloc[0]
        sign = 1.0 if r["a"] == model else -1.0  # paired_tests orders the pair by its columns
        lo, hi = (r["ci_low"], r["ci_high"]) if sign > 0 else (-r["ci_high"], -r["ci_low"])
        rows.append({"model": model, "metric": metric, "n_pairs": int(r["n_pairs"]),
                     "mean_diff": sign * r["mean_diff"], "ci_low": lo, "ci_high": hi,
                     "p_wilcoxon": r["p_wilcoxon"], "p_t": r["p_t"]})
    out = pd.DataFrame(rows, columns=["model", "metric", "n_pairs", "mean_diff", "ci_low", "ci_high",
                                      "p_wilcoxon", "p_t"])
    for test in ("wilcoxon", "t"):
        out[f"p_{test}_holm"] = stats.adjust_pvalues(out[f"p_{test}"], "holm") if len(out) else []
    return out


def headline_table(table: pd.DataFrame, models: Sequence[str], baseline: str, failure_threshold: float = 0.5,
                   n_boot: int = 2000, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per model, paired comparisons with the baseline) from a per-case table with ``benchmark_model``.

    Positive cases: Dice, HD95 (mm, mean and median), absolute volume error (mL), failure rate
    (Dice < threshold), false-positive components per scan. Negative cases: how many got any predicted
    voxel (false-positive scans) and the predicted (false-positive) volume of each, in mL.
    """
    if baseline not in models:
        raise ValueError(f"baseline {baseline!r} is not among the models {list(models)}")
    missing = [m for m in models if m not in set(table[MODEL_COL])]
    if missing:
        raise ValueError(f"no per-case results for model(s) {missing}")
    table = with_volume_error(table)
    pos, neg = positives(table), negatives(table)
    rows: list[dict[str, Any]] = []
    for model in models:
        p, n = pos[pos[MODEL_COL] == model], neg[neg[MODEL_COL] == model]
        row: dict[str, Any] = {"model": model, "baseline": model == baseline}
        for metric, key in (("dice", "dice"), ("hd95_mm", "hd95_mm"), ("abs_volume_error_ml", "abs_volume_error_ml"),
                            ("volume_error_ml", "volume_bias_ml")):
            row[f"{key}_mean"], row[f"{key}_sd"], row[f"{key}_n"] = _mean_sd(p[metric])
        dice = pd.to_numeric(p["dice"], errors="coerce").dropna()
        hd95 = pd.to_numeric(p["hd95_mm"], errors="coerce").dropna()
        row["hd95_mm_median"] = float(hd95.median()) if len(hd95) else np.nan
        fp_lesions = pd.to_numeric(p.get("lesions_false_positive", pd.Series(dtype=float)), errors="coerce").dropna()
        row["fp_components_mean"] = float(fp_lesions.mean()) if len(fp_lesions) else np.nan
        fp_ml = pd.to_numeric(n["volume_pred_ml"], errors="coerce")
        row["fp_volume_negatives_ml"] = float(fp_ml.sum()) if len(n) and fp_ml.notna().all() else np.nan
        row["fp_volume_each_ml"] = " / ".join(_f(v, 2) for v in fp_ml) if len(n) else ""
        row["n_positive"] = int(len(p))
        row["n_failures"] = int((dice < failure_threshold).sum())
        row["failure_rate"] = row["n_failures"] / len(dice) if len(dice) else np.nan
        row["n_negative"] = int(len(n))
        row["negatives_with_false_positive"] = int((~_bool(n["empty_pred"])).sum()) if len(n) else 0
        rows.append(row)
    summary = pd.DataFrame(rows)
    metrics = [m for m in ("dice", "hd95_mm", "abs_volume_error_ml") if pos[m].notna().any()]
    paired = pd.concat([paired_vs_baseline(pos, models, baseline, metric, n_boot, seed) for metric in metrics],
                       ignore_index=True)
    return summary, paired


def _f(x: Any, digits: int) -> str:
    return "n/a" if x is None or not np.isfinite(float(x)) else f"{float(x):.{digits}f}"


def _p(x: Any) -> str:
    if x is None or not np.isfinite(float(x)):
        return "n/a"
    return "<0.001" if float(x) < 0.001 else f"{float(x):.3f}"


def headline_markdown(summary: pd.DataFrame, paired: pd.DataFrame, failure_threshold: float = 0.5) -> str:
    """The table of the README: mean ± SD over positive cases, failures, FP negatives, p vs baseline (Dice)."""
    dice_p = paired[paired["metric"] == "dice"].set_index("model")
    head = ("| model | Dice | HD95 (mm) | median HD95 (mm) | abs. volume error (mL) | failures (Dice < "
            f"{failure_threshold:g}) | FP components per positive scan | negatives with FP | FP volume on "
            "negatives (mL, each) | ΔDice vs baseline [95% CI] | p Wilcoxon (Holm) | p t |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in summary.iterrows():
        fail = f"{r['n_failures']}/{r['n_positive']} ({_f(100 * r['failure_rate'], 0)} %)"
        negs = f"{r['negatives_with_false_positive']}/{r['n_negative']}"
        if r["baseline"]:
            diff = p_w = p_t = "baseline"
        elif r["model"] in dice_p.index:
            d = dice_p.loc[r["model"]]
            diff = f"{d['mean_diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"
            p_w, p_t = f"{_p(d['p_wilcoxon'])} ({_p(d['p_wilcoxon_holm'])})", _p(d["p_t"])
        else:
            diff = p_w = p_t = "n/a"
        lines.append(f"| {r['model']} | {_f(r['dice_mean'], 3)} ± {_f(r['dice_sd'], 3)} | "
                     f"{_f(r['hd95_mm_mean'], 1)} ± {_f(r['hd95_mm_sd'], 1)} | {_f(r['hd95_mm_median'], 1)} | "
                     f"{_f(r['abs_volume_error_ml_mean'], 2)} ± {_f(r['abs_volume_error_ml_sd'], 2)} | {fail} | "
                     f"{_f(r['fp_components_mean'], 1)} | {negs} | {r['fp_volume_each_ml'] or 'n/a'} | "
                     f"{diff} | {p_w} | {p_t} |")
    return "\n".join(lines) + "\n"
