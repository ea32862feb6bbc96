"""Statistics on a tidy per-case metric table (one row per system x case).

Two families, side by side:

* the reference study's: per-model OLS ``metric ~ reference_volume + age + sex + C(site)``, a
  one-way ANOVA across models and pairwise (unpaired) t-tests with Bonferroni correction;
* the ones it should have used, because every model is scored on the *same* patients: paired
  t-tests and Wilcoxon signed-rank tests (Holm and Bonferroni), a linear mixed model with a random
  intercept per patient, and seeded bootstrap confidence intervals of mean paired differences.

Plus volume agreement (Pearson r, ICC, RMSE, Bland-Altman), failure rates and subgroup summaries.

Every function returns plain dicts / DataFrames of numbers; nothing is printed. Values that could
not be computed are NaN and come with a message saying why, never silently left out.
Non-finite metric values (e.g. an HD95 that is undefined for an empty prediction) are excluded
from means and tests, and the number excluded is always reported next to the result.
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

# --------------------------------------------------------------------------------------------
# metric metadata

#: better direction of every metric: the one metric table (re-exported here for the statistics)
from nnunet_iph.analysis.metric_table import metric_direction  # noqa: E402,F401

#: default volume strata in mL (left-closed); an empty reference gets its own stratum
DEFAULT_VOLUME_BINS: tuple[float, ...] = (0.0, 5.0, 15.0, 30.0, 60.0, math.inf)

#: default covariates of the reference study's OLS, in formula order
DEFAULT_COVARIATES: tuple[str, ...] = ("reference_volume_ml", "age", "sex", "site")
#: covariates always entered as categorical
CATEGORICAL_COVARIATES: frozenset[str] = frozenset({"sex", "site"})


# --------------------------------------------------------------------------------------------
# helpers

def _finite(values: Iterable[float]) -> np.ndarray:
    arr = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
    return arr[np.isfinite(arr)]


def _count_nonfinite(values: pd.Series) -> dict[str, int]:
    arr = np.asarray(pd.to_numeric(values, errors="coerce"), dtype=float)
    return {"n_nan": int(np.isnan(arr).sum()), "n_inf": int(np.isinf(arr).sum())}


def _systems(df: pd.DataFrame, model_col: str) -> list[str]:
    """Systems in order of first appearance (stable, so reports follow the input order)."""
    return list(dict.fromkeys(df[model_col].astype(str)))


def adjust_pvalues(pvalues: Sequence[float], method: str) -> np.ndarray:
    """Holm (step-down) or Bonferroni adjusted p-values; NaN p-values are passed through untouched.

    Written out rather than calling statsmodels' ``multipletests``, which runs ``gc.collect()`` on
    every call (seconds over a report); the tests check equality with ``multipletests``.
    """
    if method not in ("holm", "bonferroni"):
        raise ValueError(f"unknown p-value adjustment {method!r} (holm, bonferroni)")
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if m == 0:
        return out
    if method == "bonferroni":
        out[ok] = np.minimum(1.0, p[ok] * m)
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    steps = p[order] * (m - np.arange(m))
    out[order] = np.minimum(1.0, np.maximum.accumulate(steps))
    return out


def jsonable(obj: Any) -> Any:
    """Convert numpy/pandas values recursively to JSON-safe builtins (NaN -> None, inf -> 'inf')."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, pd.DataFrame):
        return [jsonable(r) for r in obj.to_dict(orient="records")]
    if isinstance(obj, pd.Series):
        return jsonable(obj.to_dict())
    if isinstance(obj, np.ndarray):
        return [jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        if math.isnan(v):
            return None
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    if obj is pd.NA or obj is pd.NaT:
        return None
    return obj


# --------------------------------------------------------------------------------------------
# descriptive

def describe(df: pd.DataFrame, metric: str, model_col: str = "system") -> pd.DataFrame:
    """Per system: counts (incl. non-finite and empty-mask cases), mean, SD, median, IQR, range."""
    rows = []
    for system in _systems(df, model_col):
        sub = df[df[model_col].astype(str) == system]
        vals = _finite(sub[metric])
        row: dict[str, Any] = {model_col: system, "n_cases": len(sub), "n_finite": len(vals),
                               **_count_nonfinite(sub[metric])}
        for flag in ("empty_ref", "empty_pred"):
            if flag in sub.columns:
                row[f"n_{flag}"] = int(sub[flag].fillna(False).astype(bool).sum())
        row.update(_location(vals))
        rows.append(row)
    return pd.DataFrame(rows)


def _location(vals: np.ndarray) -> dict[str, float]:
    if len(vals) == 0:
        return dict.fromkeys(("mean", "sd", "median", "q1", "q3", "min", "max"), np.nan)
    return {"mean": float(np.mean(vals)), "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else np.nan,
            "median": float(np.median(vals)), "q1": float(np.percentile(vals, 25)),
            "q3": float(np.percentile(vals, 75)), "min": float(np.min(vals)), "max": float(np.max(vals))}


def grouped_summary(df: pd.DataFrame, metric: str, by: str | Sequence[str],
                    model_col: str = "system") -> pd.DataFrame:
    """Per system and subgroup (site, volume bin ...): n, non-finite count, mean, SD, median, IQR."""
    by = [by] if isinstance(by, str) else list(by)
    missing = [c for c in by if c not in df.columns]
    if missing:
        raise ValueError(f"grouped_summary: column(s) {missing} not in the table")
    rows = []
    for keys, sub in df.groupby([model_col, *by], sort=True, observed=True, dropna=False):
        vals = _finite(sub[metric])
        rows.append({**dict(zip([model_col, *by], keys)), "n_cases": len(sub), "n_finite": len(vals),
                     **_location(vals)})
    out = pd.DataFrame(rows)
    if len(out):  # systems in input order, subgroups in sorted / category order
        order = {s: i for i, s in enumerate(_systems(df, model_col))}
        out = out.sort_values(model_col, key=lambda c: c.astype(str).map(order), kind="stable")
    return out.reset_index(drop=True)


#: the volume stratum of cases without a reference volume
NO_VOLUME = "(no volume)"


def volume_bins(reference_ml: pd.Series, edges: Sequence[float] = DEFAULT_VOLUME_BINS) -> pd.Series:
    """Categorical volume stratum per case; an empty reference (0 mL) is its own 'empty' stratum."""
    ref = pd.to_numeric(reference_ml, errors="coerce").astype(float)
    labels = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        labels.append(f">={lo:g} mL" if math.isinf(hi) else
                      (f"<{hi:g} mL" if lo <= 0 else f"{lo:g}-{hi:g} mL"))
    out = pd.cut(ref, bins=list(edges), right=False, labels=labels, include_lowest=True)
    out = out.cat.add_categories(["empty", NO_VOLUME]).cat.reorder_categories(["empty", *labels, NO_VOLUME])
    out[ref <= 0] = "empty"
    out[ref.isna()] = NO_VOLUME  # a stratum of its own, not silently absent from the table
    return out


def failure_rate(df: pd.DataFrame, metric: str = "dice", threshold: float = 0.5,
                 model_col: str = "system") -> pd.DataFrame:
    """Share of cases with ``metric < threshold`` per system (Wilson 95% CI).

    A NaN metric (undefined for that case) is not counted as a success: it is reported in
    ``n_undefined`` and excluded from the denominator.
    """
    from statsmodels.stats.proportion import proportion_confint

    rows = []
    for system in _systems(df, model_col):
        vals = pd.to_numeric(df.loc[df[model_col].astype(str) == system, metric], errors="coerce")
        defined = vals.dropna()
        n, k = len(defined), int((defined < threshold).sum())
        lo, hi = proportion_confint(k, n, method="wilson") if n else (np.nan, np.nan)
        rows.append({model_col: system, "metric": metric, "threshold": threshold, "n": n, "n_failures": k,
                     "failure_rate": k / n if n else np.nan, "ci_low": lo, "ci_high": hi,
                     "n_undefined": int(vals.isna().sum())})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# the reference study's statistics

def _prepare_covariates(data: pd.DataFrame, covariates: Sequence[str]) -> tuple[pd.DataFrame, list[str],
                                                                                 list[dict], list[str]]:
    """Decide which covariate terms can enter the model; returns (frame, kept, dropped, messages).

    Policy, stated so it can be reported: a covariate that is absent, entirely missing or constant
    is dropped from the formula; one with *some* missing values is kept and the cases lacking it
    are excluded (complete-case analysis). Constancy is re-checked after exclusion.
    """
    dropped: list[dict] = []
    messages: list[str] = []
    frame = data.copy()
    kept: list[str] = []
    for cov in covariates:
        if cov not in frame.columns:
            dropped.append({"term": cov, "reason": f"column '{cov}' not in the data"})
            continue
        col = frame[cov]
        if cov not in CATEGORICAL_COVARIATES:
            col = pd.to_numeric(col, errors="coerce")
        else:
            col = col.where(col.notna(), None).astype(object)
            col = col.where(~col.astype(str).str.strip().isin(["", "nan", "None", "NA", "<NA>"]), None)
        frame[cov] = col
        if col.isna().all():
            dropped.append({"term": cov, "reason": f"'{cov}' has no values"})
            continue
        kept.append(cov)
    changed = True
    while changed:  # dropping a constant term can rescue cases; excluding cases can make a term constant
        changed = False
        for cov in list(kept):
            levels = frame[cov].dropna().unique()
            if len(levels) <= 1:
                what = (f"single {cov} ({levels[0]!r})" if len(levels) == 1 and cov in CATEGORICAL_COVARIATES
                        else f"'{cov}' is constant ({levels[0]!r})" if len(levels) == 1
                        else f"'{cov}' has no values")
                dropped.append({"term": cov, "reason": f"{what} -> {cov} term dropped"})
                kept.remove(cov)
        if kept:
            complete = frame[kept].notna().all(axis=1)
            if not complete.all():
                for cov in kept:
                    n_miss = int(frame[cov].isna().sum())
                    if n_miss:
                        messages.append(f"'{cov}' missing for {n_miss} of {len(frame)} cases: those cases "
                                        "excluded (complete-case analysis)")
                frame = frame[complete]
                changed = True
    for d in dropped:
        if "term dropped" not in d["reason"]:
            d["reason"] += f" -> {d['term']} term dropped"
    messages = list(dict.fromkeys(messages)) + [d["reason"] for d in dropped]
    return frame, kept, dropped, messages


def _formula_term(cov: str) -> str:
    return f"C({cov})" if cov in CATEGORICAL_COVARIATES else cov


def ols_per_model(df: pd.DataFrame, metric: str, model_col: str = "system",
                  covariates: Sequence[str] = DEFAULT_COVARIATES,
                  volume_col: str = "reference_volume_ml") -> list[dict[str, Any]]:
    """The reference study's per-model OLS ``metric ~ reference_volume + age + sex + C(site)``.

    ``volume_col`` is the column holding the reference volume; in formulas it is called
    ``reference_volume``. Terms that cannot be estimated are dropped with a message (see
    :func:`_prepare_covariates`); each result lists ``dropped_terms`` and ``messages``.
    """
    import statsmodels.formula.api as smf

    results = []
    for system in _systems(df, model_col):
        sub = df[df[model_col].astype(str) == system]
        data = pd.DataFrame({"y": pd.to_numeric(sub[metric], errors="coerce").to_numpy()})
        for cov in covariates:
            src = volume_col if cov in ("reference_volume", volume_col) else cov
            if src in sub.columns:
                data[cov] = sub[src].to_numpy()
        res: dict[str, Any] = {model_col: system, "metric": metric, "messages": []}
        n_nonfinite = int((~np.isfinite(data["y"].astype(float))).sum())
        if n_nonfinite:
            res["messages"].append(f"{n_nonfinite} case(s) with non-finite {metric} excluded")
        data = data[np.isfinite(data["y"].astype(float))]
        if not len(data):
            res["messages"].append(f"no finite {metric} value: model not fitted")
            res.update(formula=None, n=0, dropped_terms=[], r2=np.nan, r2_adj=np.nan, f_statistic=np.nan,
                       f_pvalue=np.nan, df_model=np.nan, df_resid=np.nan, aic=np.nan, bic=np.nan, coefficients=[])
            results.append(res)
            continue
        frame, kept, dropped, msgs = _prepare_covariates(data, covariates)
        res["messages"] += msgs
        res["dropped_terms"] = dropped
        terms = [_formula_term(c) for c in kept]
        formula = "y ~ " + (" + ".join(terms) if terms else "1")
        res["formula"] = formula.replace("y ~", f"{metric} ~").replace(volume_col, "reference_volume")
        res["n"] = len(frame)
        n_params = 1 + sum(frame[c].nunique() - 1 if c in CATEGORICAL_COVARIATES else 1 for c in kept)
        if len(frame) <= n_params:
            res["messages"].append(f"not enough cases (n={len(frame)}) for {n_params} parameters: model not fitted")
            res.update(r2=np.nan, r2_adj=np.nan, f_statistic=np.nan, f_pvalue=np.nan, df_model=np.nan,
                       df_resid=np.nan, aic=np.nan, bic=np.nan, coefficients=[])
            results.append(res)
            continue
        if np.ptp(frame["y"].to_numpy(float)) == 0:
            res["messages"].append(f"{metric} is the same for every case: R² and p-values undefined")
        # rank deficiency and a constant outcome are reported as messages; statsmodels' warnings
        # about them (and the divisions by zero they cause) would only repeat that
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            fit = smf.ols(formula, data=frame).fit()
            rank = int(np.linalg.matrix_rank(fit.model.exog))
            if rank < fit.model.exog.shape[1]:
                res["messages"].append(f"design matrix is rank-deficient ({rank} < {fit.model.exog.shape[1]} "
                                       "columns): collinear covariates, coefficients not identifiable")
            ci = fit.conf_int()
            res.update(r2=float(fit.rsquared), r2_adj=float(fit.rsquared_adj),
                       f_statistic=float(fit.fvalue) if terms else np.nan,
                       f_pvalue=float(fit.f_pvalue) if terms else np.nan,
                       df_model=float(fit.df_model), df_resid=float(fit.df_resid),
                       aic=float(fit.aic), bic=float(fit.bic))
            res["coefficients"] = [
                {"term": term.replace(volume_col, "reference_volume"), "coef": float(fit.params[term]),
                 "se": float(fit.bse[term]), "t": float(fit.tvalues[term]), "p": float(fit.pvalues[term]),
                 "ci_low": float(ci.loc[term, 0]), "ci_high": float(ci.loc[term, 1])}
                for term in fit.params.index]
        results.append(res)
    return results


def anova_oneway(df: pd.DataFrame, metric: str, model_col: str = "system") -> dict[str, Any]:
    """One-way ANOVA across systems (scipy ``f_oneway``): F(k-1, N-k), p, eta squared.

    Treats the systems' scores as independent samples, which they are not (same patients) —
    kept because the reference study used it; see :func:`mixed_model` for the paired analogue.
    """
    systems = _systems(df, model_col)
    groups = [_finite(df.loc[df[model_col].astype(str) == s, metric]) for s in systems]
    nonempty = [g for g in groups if len(g)]
    n_excluded = int(sum((df[model_col].astype(str) == s).sum() for s in systems) - sum(map(len, groups)))
    out: dict[str, Any] = {"metric": metric, "k": len(nonempty), "N": int(sum(map(len, nonempty))),
                           "n_excluded_nonfinite": n_excluded, "messages": [],
                           "dropped_systems": [{"system": s, "reason": f"no finite {metric} value"}
                                               for s, g in zip(systems, groups) if not len(g)]}
    if n_excluded:
        out["messages"].append(f"{n_excluded} non-finite {metric} value(s) excluded")
    out["messages"] += [f"{d['system']} dropped: {d['reason']}" for d in out["dropped_systems"]]
    if len(nonempty) < 2:
        out["messages"].append("fewer than two systems with values: ANOVA not computed")
        out.update(F=np.nan, p=np.nan, df_between=np.nan, df_within=np.nan, eta_squared=np.nan)
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sps.f_oneway(*nonempty)
    k, n = len(nonempty), out["N"]
    grand = np.concatenate(nonempty).mean()
    ss_between = sum(len(g) * (g.mean() - grand) ** 2 for g in nonempty)
    ss_total = float(((np.concatenate(nonempty) - grand) ** 2).sum())
    out.update(F=float(res.statistic), p=float(res.pvalue), df_between=k - 1, df_within=n - k,
               eta_squared=ss_between / ss_total if ss_total > 0 else np.nan)
    if n == k:
        out["messages"].append("one value per system: no within-system variance, F undefined")
    elif ss_total > 0 and ss_total - ss_between <= 1e-12 * ss_total:
        out["messages"].append(f"{metric} is constant within every system: F infinite")
    elif ss_total == 0:
        out["messages"].append(f"{metric} is the same for every case: F undefined")
    return out


def pairwise_ttests(df: pd.DataFrame, metric: str, model_col: str = "system",
                    equal_var: bool = False) -> pd.DataFrame:
    """Unpaired two-sample t-tests between all pairs of systems, Bonferroni-adjusted.

    ``equal_var=False`` gives Welch's test (default), ``True`` Student's.
    """
    systems = _systems(df, model_col)
    rows = []
    for a, b in itertools.combinations(systems, 2):
        xa = _finite(df.loc[df[model_col].astype(str) == a, metric])
        xb = _finite(df.loc[df[model_col].astype(str) == b, metric])
        row = {"a": a, "b": b, "test": "Student" if equal_var else "Welch", "n_a": len(xa), "n_b": len(xb),
               "mean_a": xa.mean() if len(xa) else np.nan, "mean_b": xb.mean() if len(xb) else np.nan,
               "message": ""}
        if len(xa) >= 2 and len(xb) >= 2:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = sps.ttest_ind(xa, xb, equal_var=equal_var)
            row.update(t=float(r.statistic), df=float(r.df), p=float(r.pvalue))
            if not np.isfinite(r.statistic):
                row["message"] = f"no variance in {a} and {b}: t undefined"
        else:
            row.update(t=np.nan, df=np.nan, p=np.nan)
            few = [f"{s} ({n})" for s, n in ((a, len(xa)), (b, len(xb))) if n < 2]
            row["message"] = f"fewer than 2 finite {metric} values in {', '.join(few)}: no test"
        rows.append(row)
    out = pd.DataFrame(rows, columns=["a", "b", "test", "n_a", "n_b", "mean_a", "mean_b", "t", "df", "p",
                                      "message"])
    out["p_bonferroni"] = adjust_pvalues(out["p"], "bonferroni") if len(out) else []
    return out


# --------------------------------------------------------------------------------------------
# paired statistics

def paired_wide(df: pd.DataFrame, metric: str, model_col: str = "system", case_col: str = "case") -> pd.DataFrame:
    """Cases x systems matrix of ``metric``; a (case, system) pair occurring twice is an error."""
    dup = df.duplicated([case_col, model_col], keep=False)
    if dup.any():
        bad = df.loc[dup, [model_col, case_col]].drop_duplicates().head(5).to_records(index=False).tolist()
        raise ValueError(f"duplicated (system, case) rows for {metric}, e.g. {bad}: one score per case and system")
    wide = df.pivot(index=case_col, columns=model_col, values=metric)
    return wide[[s for s in _systems(df, model_col)]].apply(pd.to_numeric, errors="coerce")


def bootstrap_mean_ci(values: Sequence[float], n_boot: int = 2000, seed: int = 0,
                      confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (cases resampled with replacement, seeded rng)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return (np.nan, np.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    means = x[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def paired_tests(df: pd.DataFrame, metric: str, model_col: str = "system", case_col: str = "case",
                 n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> pd.DataFrame:
    """All pairs of systems on their common cases: paired t, Wilcoxon signed-rank, bootstrap CI.

    Difference = a - b. p-values are adjusted over the pairs with Holm and with Bonferroni,
    separately for each test. Each pair's bootstrap uses a fresh ``default_rng(seed)``, so
    results do not depend on which other systems are present.
    """
    wide = paired_wide(df, metric, model_col, case_col)
    rows = []
    for a, b in itertools.combinations(list(wide.columns), 2):
        pair = wide[[a, b]]
        ok = np.isfinite(pair[a].to_numpy(float)) & np.isfinite(pair[b].to_numpy(float))
        d = (pair[a] - pair[b]).to_numpy(float)[ok]
        row: dict[str, Any] = {"a": a, "b": b, "n_pairs": int(ok.sum()),
                               "n_excluded": int(len(pair) - ok.sum()), "message": ""}
        row["mean_a"] = float(pair[a][ok].mean()) if ok.any() else np.nan
        row["mean_b"] = float(pair[b][ok].mean()) if ok.any() else np.nan
        row["mean_diff"] = float(d.mean()) if len(d) else np.nan
        row["sd_diff"] = float(d.std(ddof=1)) if len(d) > 1 else np.nan
        row["median_diff"] = float(np.median(d)) if len(d) else np.nan
        msgs = [f"{s} has no finite {metric} value" for s in (a, b) if not np.isfinite(pair[s].to_numpy(float)).any()]
        if row["n_excluded"]:
            msgs.append(f"{row['n_excluded']} case(s) without a finite score in both systems excluded")
        n_zero = int(np.sum(d == 0))
        row["n_zero_diff"] = n_zero
        if len(d) >= 2 and np.any(d != 0):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t = sps.ttest_rel(pair[a].to_numpy(float)[ok], pair[b].to_numpy(float)[ok])
                w = sps.wilcoxon(d)
            row.update(t=float(t.statistic), df=len(d) - 1, p_t=float(t.pvalue),
                       w=float(w.statistic), p_wilcoxon=float(w.pvalue))
            if np.ptp(d) == 0:
                msgs.append(f"every paired difference is {d[0]:g}: no variance, t infinite")
            if n_zero:
                msgs.append(f"Wilcoxon: {n_zero} zero difference(s) dropped (zero_method='wilcox'), "
                            f"ranked on {len(d) - n_zero}")
        elif len(d) >= 2:
            msgs.append("all paired differences are zero: p = 1")
            row.update(t=np.nan, df=len(d) - 1, p_t=1.0, w=0.0, p_wilcoxon=1.0)
        else:
            msgs.append("fewer than 2 paired cases: no test")
            row.update(t=np.nan, df=np.nan, p_t=np.nan, w=np.nan, p_wilcoxon=np.nan)
        lo, hi = bootstrap_mean_ci(d, n_boot=n_boot, seed=seed, confidence=confidence)
        row.update(ci_low=lo, ci_high=hi, n_boot=n_boot, seed=seed, confidence=confidence)
        row["message"] = "; ".join(msgs)
        rows.append(row)
    cols = ["a", "b", "n_pairs", "n_excluded", "n_zero_diff", "mean_a", "mean_b", "mean_diff", "sd_diff",
            "median_diff", "ci_low", "ci_high", "t", "df", "p_t", "w", "p_wilcoxon", "n_boot", "seed", "confidence",
            "message"]
    out = pd.DataFrame(rows, columns=cols)
    for test in ("t", "wilcoxon"):
        out[f"p_{test}_holm"] = adjust_pvalues(out[f"p_{test}"], "holm") if len(out) else []
        out[f"p_{test}_bonferroni"] = adjust_pvalues(out[f"p_{test}"], "bonferroni") if len(out) else []
    return out


def _blank_to_none(col: pd.Series) -> pd.Series:
    """Object column with blanks / 'nan' spellings as None (ids and categories, not numbers)."""
    col = col.astype(object).where(col.notna(), None)
    return col.where(~col.astype(str).str.strip().isin(["", "nan", "None", "NA", "<NA>"]), None)


def _patients(df: pd.DataFrame, case_col: str, patient_col: str | None) -> tuple[list[str], list[str]]:
    """Patient of every row and the messages: ``patient_col`` when usable, else the case itself.

    The ids are used only when every row has one and every case belongs to one patient; otherwise
    the reason is stated and each case is its own patient (the unnested model).
    """
    cases = df[case_col].astype(str).tolist()
    if patient_col is None or patient_col not in df.columns:
        return cases, []
    pid = _blank_to_none(df[patient_col])
    n_missing = int(df.loc[pid.isna().to_numpy(), case_col].nunique())
    if n_missing:
        return cases, [f"'{patient_col}' missing for {n_missing} case(s): every case is treated as its own patient"]
    per_case = pd.DataFrame({"case": cases, "patient": pid.astype(str).to_numpy()}).groupby("case")["patient"]
    clash = per_case.nunique()
    if (clash > 1).any():
        bad = clash[clash > 1].index.tolist()
        return cases, [f"'{patient_col}' differs between rows of case(s) {bad[:5]}: every case is treated as its "
                       "own patient"]
    return pid.astype(str).tolist(), []


def mixed_model(df: pd.DataFrame, metric: str, model_col: str = "system", case_col: str = "case",
                site_col: str | None = None, patient_col: str | None = None) -> dict[str, Any]:
    """Linear mixed model ``metric ~ C(system)`` with a random intercept per patient (REML).

    The patient is ``case_col`` unless ``patient_col`` is given, filled for every row and groups
    several cases (scans) per patient: then the model has a random intercept per patient plus a
    variance component per case nested in it.

    With ``site_col`` and at least two sites the model becomes ``metric ~ C(system) + C(site)``:
    site enters as a *fixed* effect, because a site variance cannot be estimated from the handful
    of sites a study has (with 2-5 sites a random site intercept sits on the boundary and the fit
    does not converge). Cases without a site are excluded from that model (complete-case
    analysis, counted). The first system with values is the reference level; an omnibus Wald
    chi-square test of all system effects is reported. Systems left without any observation are
    listed in ``dropped_systems`` with the reason.
    """
    systems = _systems(df, model_col)
    patients, messages = _patients(df, case_col, patient_col)
    data = pd.DataFrame({"y": pd.to_numeric(df[metric], errors="coerce").astype(float).to_numpy(),
                         "system": df[model_col].astype(str).to_numpy(),
                         "case": df[case_col].astype(str).to_numpy(), "patient": patients})
    use_site = site_col is not None and site_col in df.columns
    if use_site:
        data["site"] = _blank_to_none(df[site_col]).to_numpy()
    out: dict[str, Any] = {"metric": metric, "messages": messages, "dropped_systems": []}
    n_bad = int((~np.isfinite(data["y"])).sum())
    if n_bad:
        out["messages"].append(f"{n_bad} non-finite {metric} value(s) excluded")
    data = data[np.isfinite(data["y"])]
    reasons = {s: f"no finite {metric} value" for s in systems if s not in set(data["system"])}
    if use_site:
        n_missing = int(data.loc[data["site"].isna(), "case"].nunique())
        if n_missing:
            out["n_excluded_missing_site"] = n_missing
            out["messages"].append(f"'{site_col}' missing for {n_missing} of {data['case'].nunique()} case(s): "
                                   "those cases excluded from the site-adjusted model (complete-case analysis)")
        data = data[data["site"].notna()].astype({"site": str})
        reasons.update({s: f"no case with a known {site_col}" for s in systems
                        if s not in reasons and s not in set(data["system"])})
    out["dropped_systems"] = [{"system": s, "reason": r} for s, r in reasons.items()]
    present = [s for s in systems if s not in reasons]
    out["reference_system"] = present[0] if present else None
    nested = data["patient"].nunique() < data["case"].nunique()
    out.update(n_obs=len(data), n_groups=int(data["patient"].nunique()), n_cases=int(data["case"].nunique()))
    if len(present) < 2:
        out["messages"].append("fewer than two systems with values: mixed model not fitted")
        return out
    if data["patient"].nunique() < 2 or data.groupby("case").size().max() < 2:
        out["messages"].append("no patient scored by more than one system: mixed model not fitted")
        return out
    formula = f"y ~ C(system, Treatment(reference={present[0]!r}))"
    with_site = "site" in data.columns and data["site"].nunique() >= 2
    if site_col is not None and not with_site:
        out["messages"].append(f"fewer than two sites in '{site_col}': site term dropped")
    if with_site:
        formula += " + C(site)"
    out["random_effects"] = ("intercept per patient + variance component per case (scan) within patient"
                             if nested else "intercept per patient")
    if np.ptp(data["y"].to_numpy()) == 0:
        out["messages"].append(f"{metric} is constant: mixed model not fitted")
        return out
    if _additive_exactly(data):
        out["messages"].append("every difference between systems is the same for all cases: no residual "
                               "variance, mixed model not fitted")
        return out
    try:
        res = _fit_mixed(formula, data, model_col, site_col, nested)
    except (np.linalg.LinAlgError, ValueError, ZeroDivisionError, FloatingPointError) as err:
        out["messages"].append(f"mixed model failed: {err}")
        return out
    out["messages"] += res.pop("messages")
    out["formula"] = (f"{metric} ~ C({model_col})" + (f" + C({site_col})" if with_site else "")
                      + " + (1 | patient)" + (" + (1 | patient:case)" if nested else ""))
    out.update(res)
    return out


def _additive_exactly(data: pd.DataFrame) -> bool:
    """True when ``y ~ C(system) + C(case)`` fits without residual: REML is then unbounded (and slow)."""
    systems, cases = pd.factorize(data["system"])[0], pd.factorize(data["case"])[0]
    x = np.zeros((len(data), systems.max() + cases.max() + 2))
    x[np.arange(len(data)), systems] = 1.0
    x[np.arange(len(data)), systems.max() + 1 + cases] = 1.0
    y = data["y"].to_numpy(float)
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    return float(((y - x @ beta) ** 2).sum()) <= 1e-20 * float(((y - y.mean()) ** 2).sum())


#: a variance component below this share of the residual variance is reported as on the boundary (0)
BOUNDARY_RATIO = 1e-6
#: lower bound of the variance ratios during the optimisation: the REML likelihood needs them > 0
_RATIO_FLOOR = 1e-10
#: upper bound of the variance ratios (a degenerate fit must not run off to infinity)
_RATIO_CEILING = 1e8
#: statsmodels' optimiser messages, replaced by our own convergence and boundary judgement
_OPTIMIZER_NOISE = ("Retrying", "Maximum Likelihood optimization failed", "MixedLM optimization failed",
                    "Gradient optimization failed", "The MLE may be on the boundary")


def _fit_reml(model: Any) -> tuple[np.ndarray, bool, str]:
    """Maximise the profile REML likelihood of the variance ratios (variance / residual variance).

    Why not ``MixedLM.fit``: it stops at statsmodels' default tolerance (variances ~1e-5 relative
    off the optimum) and, in its square-root parametrisation, cannot settle on a zero variance.
    Bounded L-BFGS-B on the ratios with tight tolerances reaches the optimum, boundary included.
    Returns (ratios, converged, optimiser message).
    """
    from scipy.optimize import minimize

    k = model.k_re2 + model.k_vc
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        model.fit(reml=True, method="bfgs", maxiter=0)  # sets the state loglike() and score() read
        opt = minimize(lambda th: -model.loglike(th, profile_fe=True) / model.nobs, np.ones(k),
                       jac=lambda th: -model.score(th, profile_fe=True) / model.nobs, method="L-BFGS-B",
                       bounds=[(_RATIO_FLOOR, _RATIO_CEILING)] * k,
                       options={"ftol": 0.0, "gtol": 1e-12, "maxiter": 500})
    at_floor = opt.x <= 2 * _RATIO_FLOOR
    projected = np.where(at_floor, np.minimum(opt.jac, 0.0), opt.jac)
    return opt.x, bool(opt.success or np.max(np.abs(projected)) < 1e-8), str(opt.message)


def _fit_mixed(formula: str, data: pd.DataFrame, model_col: str, site_col: str | None,
               nested: bool = False) -> dict[str, Any]:
    import statsmodels.formula.api as smf

    # re_formula="1" explicitly: with a vc_formula statsmodels otherwise drops the patient intercept
    vc = {"case": "0 + C(case)"} if nested else None
    model = smf.mixedlm(formula, data, groups=data["patient"], re_formula="1", vc_formula=vc, use_sqrt=False)
    ratios, converged, how = _fit_reml(model)
    with warnings.catch_warnings(record=True) as wlist, np.errstate(all="ignore"):
        warnings.simplefilter("always")
        # no optimisation here (maxiter=0): statsmodels evaluates estimates, SEs and tests at the optimum
        fit = model.fit(reml=True, start_params=ratios, method="bfgs", maxiter=0)
    at_zero = ratios <= 2 * _RATIO_FLOOR
    # at a zero variance the likelihood's curvature in that variance is not a maximum's: statsmodels'
    # "Hessian not positive definite" then concerns only that variance, not the fixed effects
    noise = _OPTIMIZER_NOISE + (("The Hessian matrix at the estimated parameter values",) if at_zero.any() else ())
    caught = dict.fromkeys(str(w.message).splitlines()[0] for w in wlist)
    out: dict[str, Any] = {"converged": converged,
                           "messages": [f"statsmodels: {m}" for m in caught if not m.startswith(noise)]}
    if not converged:
        out["messages"].append(f"REML optimisation did not converge ({how}): estimates may be inaccurate")
    fe = fit.fe_params
    ci = fit.conf_int()
    pretty = {}
    for term in fe.index:
        name = term
        if term.startswith("C(system"):
            name = f"{model_col}[{term.split('[T.', 1)[1].rstrip(']')}]"
        elif term.startswith("C(site)"):
            name = f"{site_col}[{term.split('[T.', 1)[1].rstrip(']')}]"
        pretty[term] = name
    out["fixed_effects"] = [{"term": pretty[t], "coef": float(fe[t]), "se": float(fit.bse_fe[t]),
                             "z": float(fit.tvalues[t]), "p": float(fit.pvalues[t]),
                             "ci_low": float(ci.loc[t, 0]), "ci_high": float(ci.loc[t, 1])} for t in fe.index]
    out["residual_var"] = float(fit.scale)
    # a ratio stopped at the optimisation floor is an estimate of exactly 0
    names = ["patient_var"] + (["case_var"] if nested else [])
    for name, ratio, zero in zip(names, ratios, at_zero):
        out[name] = 0.0 if zero else float(ratio * fit.scale)
    out["on_boundary"] = [n for n in names if out[n] < BOUNDARY_RATIO * out["residual_var"]]
    for name in out["on_boundary"]:
        what = "patient" if name == "patient_var" else "scan-within-patient"
        out["messages"].append(f"{what} variance estimated at 0 (< {BOUNDARY_RATIO:g} x residual variance: REML "
                               "optimum on the boundary)")
    out["llf_reml"] = float(fit.llf)
    sys_idx = [i for i, t in enumerate(fe.index) if t.startswith("C(system")]
    if sys_idx:
        r = np.zeros((len(sys_idx), len(fit.params)))
        for row, i in enumerate(sys_idx):
            r[row, i] = 1.0
        wald = fit.wald_test(r, scalar=True)
        out["wald_chi2"] = float(np.squeeze(wald.statistic))
        out["wald_df"] = len(sys_idx)
        out["wald_p"] = float(np.squeeze(wald.pvalue))
    return out


# --------------------------------------------------------------------------------------------
# volume agreement

def icc_table(ratings: np.ndarray) -> dict[str, float]:
    """ICC(1,1), ICC(2,1) and ICC(3,1) of an n subjects x k raters matrix (Shrout & Fleiss 1979).

    Single-measure forms from the two-way ANOVA mean squares: ICC(2,1) is two-way random effects,
    absolute agreement; ICC(3,1) two-way mixed, consistency; ICC(1,1) one-way random.
    """
    y = np.asarray(ratings, dtype=float)
    n, k = y.shape
    if n < 2 or k < 2:
        return {"icc1_1": np.nan, "icc2_1": np.nan, "icc3_1": np.nan}
    grand = y.mean()
    ss_rows = k * ((y.mean(axis=1) - grand) ** 2).sum()
    ss_cols = n * ((y.mean(axis=0) - grand) ** 2).sum()
    ss_total = ((y - grand) ** 2).sum()
    ss_err = ss_total - ss_rows - ss_cols
    msr, msc, mse = ss_rows / (n - 1), ss_cols / (k - 1), ss_err / ((n - 1) * (k - 1))
    msw = (ss_total - ss_rows) / (n * (k - 1))
    ratio = lambda num, den: float(num / den) if den > 0 else np.nan  # noqa: E731
    return {"icc1_1": ratio(msr - msw, msr + (k - 1) * msw),
            "icc2_1": ratio(msr - mse, msr + (k - 1) * mse + k * (msc - mse) / n),
            "icc3_1": ratio(msr - mse, msr + (k - 1) * mse)}


def icc(y1: Sequence[float], y2: Sequence[float]) -> dict[str, float]:
    """ICC(2,1) (absolute agreement) and ICC(3,1) (consistency) of two 'raters': prediction, reference.

    ICC(2,1) is the headline number because it penalises a systematic volume bias, which is what
    volume agreement is about; ICC(3,1) ignores a constant offset.
    """
    out = icc_table(np.column_stack([np.asarray(y1, float), np.asarray(y2, float)]))
    return {"icc2_1": out["icc2_1"], "icc3_1": out["icc3_1"]}


def volume_agreement(pred_ml: Sequence[float], ref_ml: Sequence[float], tolerance_ml: float = 5.0) -> dict[str, Any]:
    """DeepBleed-style agreement of predicted with reference volumes (difference = pred - ref)."""
    p = np.asarray(pd.to_numeric(pd.Series(pred_ml), errors="coerce"), float)
    r = np.asarray(pd.to_numeric(pd.Series(ref_ml), errors="coerce"), float)
    ok = np.isfinite(p) & np.isfinite(r)
    p, r = p[ok], r[ok]
    out: dict[str, Any] = {"n": int(ok.sum()), "n_excluded": int((~ok).sum()), "tolerance_ml": tolerance_ml}
    if len(p) == 0:
        return out | dict.fromkeys(("pearson_r", "pearson_p", "icc2_1", "icc3_1", "rmse_ml", "mae_ml",
                                    "mean_diff_ml", "sd_diff_ml", "pct_within_tolerance", "ba_bias_ml",
                                    "ba_loa_low_ml", "ba_loa_high_ml"), np.nan)
    d = p - r
    sd = float(d.std(ddof=1)) if len(d) > 1 else np.nan
    if len(p) >= 3 and np.ptp(p) > 0 and np.ptp(r) > 0:
        pr = sps.pearsonr(p, r)
        out.update(pearson_r=float(pr.statistic), pearson_p=float(pr.pvalue))
    else:
        out.update(pearson_r=np.nan, pearson_p=np.nan)
    out.update(icc(p, r))
    out.update(rmse_ml=float(np.sqrt(np.mean(d ** 2))), mae_ml=float(np.mean(np.abs(d))),
               mean_diff_ml=float(d.mean()), sd_diff_ml=sd,
               pct_within_tolerance=float(100.0 * np.mean(np.abs(d) <= tolerance_ml)),
               ba_bias_ml=float(d.mean()), ba_loa_low_ml=float(d.mean() - 1.96 * sd),
               ba_loa_high_ml=float(d.mean() + 1.96 * sd))
    return out


def volume_agreement_by_system(df: pd.DataFrame, model_col: str = "system", pred_col: str = "volume_pred_ml",
                               ref_col: str = "reference_volume_ml", tolerance_ml: float = 5.0) -> pd.DataFrame:
    """:func:`volume_agreement` per system, as a table."""
    rows = []
    for system in _systems(df, model_col):
        sub = df[df[model_col].astype(str) == system]
        rows.append({model_col: system, **volume_agreement(sub[pred_col], sub[ref_col], tolerance_ml)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# everything for one metric

def analyze_metric(df: pd.DataFrame, metric: str, model_col: str = "system", case_col: str = "case",
                   site_col: str = "site", volume_col: str = "reference_volume_ml", patient_col: str = "patient_id",
                   covariates: Sequence[str] = DEFAULT_COVARIATES, n_boot: int = 2000, seed: int = 0,
                   volume_edges: Sequence[float] = DEFAULT_VOLUME_BINS) -> dict[str, Any]:
    """All statistics for one metric, as a JSON-ready nested dict of numbers and messages."""
    if metric not in df.columns:
        raise ValueError(f"metric '{metric}' is not a column of the table (have: {list(df.columns)})")
    out: dict[str, Any] = {"metric": metric, "direction": metric_direction(metric)}
    out["describe"] = describe(df, metric, model_col)
    out["ols"] = ols_per_model(df, metric, model_col, covariates=covariates, volume_col=volume_col)
    out["anova"] = anova_oneway(df, metric, model_col)
    out["pairwise_t"] = pairwise_ttests(df, metric, model_col, equal_var=False)
    out["pairwise_student_t"] = pairwise_ttests(df, metric, model_col, equal_var=True)
    out["paired"] = paired_tests(df, metric, model_col, case_col, n_boot=n_boot, seed=seed)
    out["mixed_model"] = mixed_model(df, metric, model_col, case_col, patient_col=patient_col)
    site = _blank_to_none(df[site_col]) if site_col in df.columns else None
    if site is not None and site.nunique() >= 2:
        out["mixed_model_site"] = mixed_model(df, metric, model_col, case_col, site_col=site_col,
                                              patient_col=patient_col)
    elif site is not None:
        out["mixed_model"]["messages"].append(f"single {site_col}: no site-adjusted mixed model")
    if site is not None:
        out["by_site"] = grouped_summary(df.assign(**{site_col: site.fillna(MISSING_GROUP)}), metric, site_col,
                                         model_col)
    if volume_col in df.columns:
        binned = df.assign(volume_bin=volume_bins(df[volume_col], volume_edges))
        out["by_volume_bin"] = grouped_summary(binned, metric, "volume_bin", model_col)
    out["excluded_systems"] = excluded_systems(out, model_col)
    return out


#: the subgroup of cases whose site (or other grouping value) is unknown
MISSING_GROUP = "(no site)"
#: the tests of :func:`analyze_metric`, as named in the report
_TEST_NAMES = {"ols": "OLS", "anova": "ANOVA", "pairwise_t": "Welch t-tests", "pairwise_student_t": "Student t-tests",
               "paired": "paired tests", "mixed_model": "mixed model", "mixed_model_site": "site-adjusted mixed model"}


def excluded_systems(result: dict[str, Any], model_col: str = "system") -> list[dict[str, Any]]:
    """Every system left out of some test of :func:`analyze_metric`'s ``result``: the tests and why.

    A system whose metric is undefined for every case (e.g. HD95 of a model that predicts nothing)
    would otherwise just be absent from the ANOVA or the mixed model; this names it.
    """
    metric = result["metric"]
    empty = set(result["describe"].loc[result["describe"]["n_finite"] == 0, model_col].astype(str))
    found: dict[tuple[str, str], list[str]] = {}

    def add(system: str, reason: str, key: str) -> None:
        reason = f"no finite {metric} value" if system in empty else reason
        tests = found.setdefault((system, reason), [])
        if _TEST_NAMES[key] not in tests:
            tests.append(_TEST_NAMES[key])

    for fit in result.get("ols", []):
        if not fit["coefficients"]:
            add(str(fit[model_col]), fit["messages"][-1] if fit["messages"] else "not fitted", "ols")
    for key in ("anova", "mixed_model", "mixed_model_site"):
        for d in result.get(key, {}).get("dropped_systems", []):
            add(d["system"], d["reason"], key)
    for key in ("pairwise_t", "pairwise_student_t", "paired"):
        tab = result.get(key)
        for system in dict.fromkeys([*tab["a"], *tab["b"]]) if tab is not None else ():
            rows = tab[(tab["a"] == system) | (tab["b"] == system)]
            if rows["p_t" if key == "paired" else "p"].isna().all():
                add(system, next((m for m in rows["message"] if m), "no test"), key)
    return [{"system": s, "reason": r, "tests": t} for (s, r), t in found.items()]
