"""Statistics reproduce statsmodels / scipy / hand computations done independently here."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from nnunet_iph.analysis import stats as S


def cohort(k: int = 3, n: int = 24, seed: int = 0, sites: str = "ABC") -> pd.DataFrame:
    """k systems x n patients; patient effect + system effect + noise; covariates per patient."""
    rng = np.random.default_rng(seed)
    patient = rng.normal(0, 0.08, n)
    volume = rng.uniform(1, 60, n)
    age = rng.integers(20, 90, n)
    sex = np.where(rng.random(n) < 0.5, "M", "F")
    site = [sites[i % len(sites)] for i in range(n)]
    rows = []
    for j in range(k):
        for i in range(n):
            rows.append({"system": f"S{j}", "case": f"c{i:03d}", "site": site[i], "age": age[i], "sex": sex[i],
                         "reference_volume_ml": volume[i],
                         "volume_pred_ml": volume[i] * rng.uniform(0.7, 1.3) + 0.5 * j,
                         "dice": 0.7 + 0.03 * j + patient[i] + 0.002 * volume[i] + rng.normal(0, 0.05)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ reference study: OLS

def test_ols_matches_statsmodels_and_lstsq():
    df = cohort()
    res = S.ols_per_model(df, "dice")
    assert [r["system"] for r in res] == ["S0", "S1", "S2"]
    sub = df[df["system"] == "S1"].rename(columns={"reference_volume_ml": "reference_volume"})
    ref = smf.ols("dice ~ reference_volume + age + C(sex) + C(site)", data=sub).fit()
    r1 = res[1]
    assert r1["formula"] == "dice ~ reference_volume + age + C(sex) + C(site)"
    assert r1["n"] == 24 and r1["dropped_terms"] == [] and r1["messages"] == []
    coefs = {c["term"]: c for c in r1["coefficients"]}
    for term in ref.params.index:
        assert coefs[term]["coef"] == pytest.approx(ref.params[term], rel=1e-10, abs=1e-12)
        assert coefs[term]["p"] == pytest.approx(ref.pvalues[term], rel=1e-8)
        assert coefs[term]["se"] == pytest.approx(ref.bse[term], rel=1e-8)
    assert r1["r2"] == pytest.approx(ref.rsquared, rel=1e-10)
    assert r1["f_pvalue"] == pytest.approx(ref.f_pvalue, rel=1e-8)
    # independent of statsmodels: least squares on a hand-built design matrix
    x = np.column_stack([np.ones(len(sub)), (sub["sex"] == "M").astype(float), (sub["site"] == "B").astype(float),
                         (sub["site"] == "C").astype(float), sub["reference_volume"], sub["age"].astype(float)])
    beta, *_ = np.linalg.lstsq(x, sub["dice"].to_numpy(), rcond=None)
    names = ["Intercept", "C(sex)[T.M]", "C(site)[T.B]", "C(site)[T.C]", "reference_volume", "age"]
    for name, b in zip(names, beta):
        assert coefs[name]["coef"] == pytest.approx(b, rel=1e-8, abs=1e-12)
    resid = sub["dice"].to_numpy() - x @ beta
    r2 = 1 - (resid ** 2).sum() / ((sub["dice"] - sub["dice"].mean()) ** 2).sum()
    assert r1["r2"] == pytest.approx(r2, rel=1e-8)


def test_single_site_drops_site_term_with_message():
    df = cohort(sites="A")
    res = S.ols_per_model(df, "dice")[0]
    assert res["formula"] == "dice ~ reference_volume + age + C(sex)"
    assert [d["term"] for d in res["dropped_terms"]] == ["site"]
    assert any("single site ('A')" in m and "site term dropped" in m for m in res["messages"])
    assert "C(site)" not in {c["term"] for c in res["coefficients"]}


def test_absent_and_constant_covariates_dropped_with_messages():
    df = cohort().drop(columns=["age"]).assign(sex="F")
    res = S.ols_per_model(df, "dice")[0]
    dropped = {d["term"]: d["reason"] for d in res["dropped_terms"]}
    assert set(dropped) == {"age", "sex"}
    assert "column 'age' not in the data" in dropped["age"] and "age term dropped" in dropped["age"]
    assert "single sex ('F')" in dropped["sex"]
    assert res["formula"] == "dice ~ reference_volume + C(site)"
    ref = smf.ols("dice ~ reference_volume + C(site)", data=df[df.system == "S0"].rename(
        columns={"reference_volume_ml": "reference_volume"})).fit()
    assert res["r2"] == pytest.approx(ref.rsquared, rel=1e-10)


def test_all_missing_and_partly_missing_covariates():
    df = cohort()
    df["age"] = np.nan
    res = S.ols_per_model(df, "dice")[0]
    assert any("'age' has no values" in m and "age term dropped" in m for m in res["messages"])
    df = cohort()
    df.loc[df["case"].isin(["c000", "c001", "c002"]), "age"] = np.nan
    res = S.ols_per_model(df, "dice")[0]
    assert res["n"] == 21
    assert any("'age' missing for 3 of 24 cases" in m and "complete-case" in m for m in res["messages"])
    assert "age" in res["formula"]


def test_nonfinite_metric_excluded_and_counted():
    df = cohort()
    df.loc[(df.system == "S0") & (df.case == "c001"), "dice"] = np.inf
    res = S.ols_per_model(df, "dice")[0]
    assert res["n"] == 23 and any("1 case(s) with non-finite dice excluded" in m for m in res["messages"])


def test_too_few_cases_not_fitted():
    df = cohort(n=4)
    res = S.ols_per_model(df, "dice")[0]
    assert res["coefficients"] == [] and np.isnan(res["r2"])
    assert any("not enough cases" in m for m in res["messages"])


# ------------------------------------------------------------------ reference study: ANOVA, t-tests

@pytest.mark.parametrize("k,n", [(2, 10), (3, 24), (5, 7)])
def test_anova_k_models_n_subjects_degrees_of_freedom(k, n):
    df = cohort(k=k, n=n, seed=k)
    res = S.anova_oneway(df, "dice")
    assert (res["df_between"], res["df_within"]) == (k - 1, k * n - k)
    groups = [df.loc[df.system == f"S{j}", "dice"].to_numpy() for j in range(k)]
    ref = sps.f_oneway(*groups)
    assert res["F"] == pytest.approx(ref.statistic, rel=1e-10)
    assert res["p"] == pytest.approx(ref.pvalue, rel=1e-8)
    # by hand: between / within mean squares
    grand = np.concatenate(groups).mean()
    ssb = sum(len(g) * (g.mean() - grand) ** 2 for g in groups)
    ssw = sum(((g - g.mean()) ** 2).sum() for g in groups)
    assert res["F"] == pytest.approx((ssb / (k - 1)) / (ssw / (k * n - k)), rel=1e-10)
    assert res["p"] == pytest.approx(sps.f.sf(res["F"], k - 1, k * n - k), rel=1e-8)


def test_anova_single_system_is_reported_not_computed():
    res = S.anova_oneway(cohort(k=1), "dice")
    assert np.isnan(res["F"]) and "fewer than two systems" in res["messages"][0]


@pytest.mark.parametrize("equal_var", [False, True])
def test_pairwise_ttests_match_scipy_with_bonferroni(equal_var):
    df = cohort(k=4, n=15)
    res = S.pairwise_ttests(df, "dice", equal_var=equal_var)
    assert len(res) == 6 and res["test"].iloc[0] == ("Student" if equal_var else "Welch")
    for _, r in res.iterrows():
        a, b = (df.loc[df.system == s, "dice"].to_numpy() for s in (r["a"], r["b"]))
        ref = sps.ttest_ind(a, b, equal_var=equal_var)
        assert r["t"] == pytest.approx(ref.statistic, rel=1e-10)
        assert r["p"] == pytest.approx(ref.pvalue, rel=1e-8)
        assert r["p_bonferroni"] == pytest.approx(min(1.0, 6 * ref.pvalue), rel=1e-8)
        if not equal_var:  # Welch-Satterthwaite by hand
            va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
            dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
            assert r["df"] == pytest.approx(dof, rel=1e-10)
        else:
            assert r["df"] == len(a) + len(b) - 2


# ------------------------------------------------------------------ paired statistics

def test_paired_tests_match_scipy_and_holm():
    df = cohort(k=3, n=20)
    res = S.paired_tests(df, "dice", n_boot=500, seed=1)
    assert list(zip(res["a"], res["b"])) == [("S0", "S1"), ("S0", "S2"), ("S1", "S2")]
    wide = df.pivot(index="case", columns="system", values="dice")
    p_t, p_w = [], []
    for (_, r), (a, b) in zip(res.iterrows(), itertools.combinations(["S0", "S1", "S2"], 2)):
        t = sps.ttest_rel(wide[a], wide[b])
        w = sps.wilcoxon(wide[a] - wide[b])
        assert r["n_pairs"] == 20 and r["df"] == 19
        assert r["mean_diff"] == pytest.approx((wide[a] - wide[b]).mean(), rel=1e-12)
        assert r["t"] == pytest.approx(t.statistic, rel=1e-10) and r["p_t"] == pytest.approx(t.pvalue, rel=1e-8)
        assert r["w"] == pytest.approx(w.statistic) and r["p_wilcoxon"] == pytest.approx(w.pvalue, rel=1e-8)
        p_t.append(t.pvalue)
        p_w.append(w.pvalue)
    np.testing.assert_allclose(res["p_t_holm"], multipletests(p_t, method="holm")[1], rtol=1e-10)
    np.testing.assert_allclose(res["p_wilcoxon_holm"], multipletests(p_w, method="holm")[1], rtol=1e-10)
    np.testing.assert_allclose(res["p_t_bonferroni"], np.minimum(1, np.array(p_t) * 3), rtol=1e-10)
    np.testing.assert_allclose(res["p_wilcoxon_bonferroni"], np.minimum(1, np.array(p_w) * 3), rtol=1e-10)


def test_holm_by_hand():
    p = [0.01, 0.04, 0.03, 0.20]
    # sorted 0.01,0.03,0.04,0.20 -> x4,x3,x2,x1 = 0.04,0.09,0.08->0.09 (monotone),0.20
    np.testing.assert_allclose(S.adjust_pvalues(p, "holm"), [0.04, 0.09, 0.09, 0.20])
    np.testing.assert_allclose(S.adjust_pvalues(p, "bonferroni"), [0.04, 0.16, 0.12, 0.80])
    out = S.adjust_pvalues([0.01, np.nan, 0.02], "holm")
    assert np.isnan(out[1]) and out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.02)


def test_adjustments_equal_statsmodels_multipletests():
    rng = np.random.default_rng(0)
    for _ in range(8):  # multipletests runs gc.collect() per call: keep this small
        p = rng.random(int(rng.integers(1, 15))) ** 3
        for method in ("holm", "bonferroni"):
            np.testing.assert_allclose(S.adjust_pvalues(p, method), multipletests(p, method=method)[1], rtol=1e-12)


def test_paired_tests_use_common_finite_cases_and_say_so():
    df = cohort(k=2, n=12)
    df.loc[(df.system == "S1") & (df.case == "c003"), "dice"] = np.nan
    df = df[~((df.system == "S0") & (df.case == "c005"))]
    r = S.paired_tests(df, "dice", n_boot=100).iloc[0]
    assert r["n_pairs"] == 10 and r["n_excluded"] == 2 and "2 case(s)" in r["message"]


def test_paired_all_zero_differences():
    df = cohort(k=2, n=6)
    df.loc[df.system == "S1", "dice"] = df.loc[df.system == "S0", "dice"].to_numpy()
    r = S.paired_tests(df, "dice", n_boot=100).iloc[0]
    assert r["p_t"] == 1.0 and r["p_wilcoxon"] == 1.0 and "zero" in r["message"]


def test_duplicate_case_is_an_error():
    df = cohort(k=2, n=5)
    df = pd.concat([df, df.iloc[[0]]])
    with pytest.raises(ValueError, match="duplicated"):
        S.paired_tests(df, "dice")


def test_bootstrap_is_seeded_and_matches_a_manual_resampling():
    x = np.random.default_rng(5).normal(0.02, 0.1, 40)
    a = S.bootstrap_mean_ci(x, n_boot=3000, seed=7)
    assert a == S.bootstrap_mean_ci(x, n_boot=3000, seed=7)
    assert a != S.bootstrap_mean_ci(x, n_boot=3000, seed=8)
    rng = np.random.default_rng(7)
    means = x[rng.integers(0, len(x), size=(3000, len(x)))].mean(axis=1)
    assert a == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])), rel=1e-12)
    assert a[0] < x.mean() < a[1]
    # paired_tests: same seed -> identical CIs, independent of the other systems present
    df = cohort(k=3, n=15)
    r1 = S.paired_tests(df, "dice", n_boot=400, seed=3)
    r2 = S.paired_tests(df, "dice", n_boot=400, seed=3)
    pd.testing.assert_frame_equal(r1, r2)
    r3 = S.paired_tests(df[df.system != "S2"], "dice", n_boot=400, seed=3)
    assert r3[["ci_low", "ci_high"]].iloc[0].tolist() == r1[["ci_low", "ci_high"]].iloc[0].tolist()


def test_mixed_model_matches_statsmodels():
    df = cohort(k=3, n=20)
    res = S.mixed_model(df, "dice")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = smf.mixedlm("dice ~ C(system)", df, groups=df["case"]).fit(reml=True)
    assert res["n_obs"] == 60 and res["n_groups"] == 20 and res["converged"]
    coefs = {f["term"]: f for f in res["fixed_effects"]}
    assert coefs["system[S1]"]["coef"] == pytest.approx(ref.fe_params["C(system)[T.S1]"], rel=1e-5)
    assert coefs["system[S2]"]["p"] == pytest.approx(ref.pvalues["C(system)[T.S2]"], rel=1e-3)
    assert res["patient_var"] == pytest.approx(float(ref.cov_re.iloc[0, 0]), rel=1e-3)
    # balanced design: fixed effects are the mean paired differences
    wide = df.pivot(index="case", columns="system", values="dice")
    assert coefs["system[S2]"]["coef"] == pytest.approx((wide["S2"] - wide["S0"]).mean(), rel=1e-6)
    assert res["wald_df"] == 2 and 0 <= res["wald_p"] <= 1
    # with sites: site as fixed effect
    res_site = S.mixed_model(df, "dice", site_col="site")
    assert "site[B]" in {f["term"] for f in res_site["fixed_effects"]}
    single = S.mixed_model(df.assign(site="A"), "dice", site_col="site")
    assert any("site term dropped" in m for m in single["messages"])


def test_mixed_model_groups_scans_by_patient():
    df = cohort(k=2, n=12)
    df["patient_id"] = df["case"].map(lambda c: f"p{int(c[1:]) // 2}")  # two scans per patient
    res = S.mixed_model(df, "dice", patient_col="patient_id")
    assert res["n_groups"] == 6 and res["n_cases"] == 12 and "case_var" in res
    assert "(1 | patient:case)" in res["formula"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = smf.mixedlm("dice ~ C(system)", df, groups=df["patient_id"],
                          vc_formula={"case": "0 + C(case)"}).fit(reml=True)
    coefs = {f["term"]: f["coef"] for f in res["fixed_effects"]}
    assert coefs["system[S1]"] == pytest.approx(ref.fe_params["C(system)[T.S1]"], rel=1e-4)
    # one scan per patient (or no ids): plain random intercept per case
    df["patient_id"] = df["case"]
    assert "case_var" not in S.mixed_model(df, "dice", patient_col="patient_id")
    df.loc[0, "patient_id"] = None
    assert S.mixed_model(df, "dice", patient_col="patient_id")["n_groups"] == 12


def test_mixed_model_needs_two_systems():
    res = S.mixed_model(cohort(k=1), "dice")
    assert "fixed_effects" not in res and "fewer than two systems" in res["messages"][0]


# ------------------------------------------------------------------ volume agreement, failures, subgroups

def test_icc_shrout_fleiss_example():
    # Shrout & Fleiss (1979), Table 2: 6 targets x 4 judges
    y = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])
    out = S.icc_table(y)
    assert out["icc1_1"] == pytest.approx(0.17, abs=0.005)
    assert out["icc2_1"] == pytest.approx(0.29, abs=0.005)
    assert out["icc3_1"] == pytest.approx(0.71, abs=0.005)


def test_icc_two_raters_from_anova_mean_squares():
    rng = np.random.default_rng(2)
    ref = rng.uniform(0, 50, 30)
    pred = ref + 3 + rng.normal(0, 4, 30)
    long = pd.DataFrame({"y": np.r_[pred, ref], "subj": np.r_[np.arange(30), np.arange(30)],
                         "rater": ["p"] * 30 + ["r"] * 30})
    import statsmodels.api as sm

    tab = sm.stats.anova_lm(smf.ols("y ~ C(subj) + C(rater)", long).fit())
    ms = tab["sum_sq"] / tab["df"]
    msr, msc, mse = ms["C(subj)"], ms["C(rater)"], ms["Residual"]
    out = S.icc(pred, ref)
    assert out["icc2_1"] == pytest.approx((msr - mse) / (msr + mse + 2 * (msc - mse) / 30), rel=1e-9)
    assert out["icc3_1"] == pytest.approx((msr - mse) / (msr + mse), rel=1e-9)
    assert out["icc2_1"] < out["icc3_1"]  # the +3 mL bias is penalised only by absolute agreement


def test_volume_agreement_by_hand():
    pred = np.array([10.0, 22.0, 4.0, 35.0, 0.0])
    ref = np.array([12.0, 20.0, 4.0, 25.0, 1.0])
    out = S.volume_agreement(pred, ref)
    d = pred - ref  # -2, 2, 0, 10, -1
    assert out["n"] == 5 and out["mean_diff_ml"] == pytest.approx(1.8) and out["ba_bias_ml"] == pytest.approx(1.8)
    assert out["rmse_ml"] == pytest.approx(np.sqrt(np.mean(d ** 2)))
    assert out["pct_within_tolerance"] == pytest.approx(80.0)
    sd = d.std(ddof=1)
    assert out["ba_loa_low_ml"] == pytest.approx(1.8 - 1.96 * sd) and out["ba_loa_high_ml"] == pytest.approx(1.8 + 1.96 * sd)
    assert out["pearson_r"] == pytest.approx(sps.pearsonr(pred, ref).statistic)
    assert out["mae_ml"] == pytest.approx(3.0)
    out = S.volume_agreement([1.0, np.nan], [1.0, 2.0])
    assert out["n"] == 1 and out["n_excluded"] == 1


def test_failure_rate_counts_and_wilson_ci():
    df = pd.DataFrame({"system": ["a"] * 6 + ["b"] * 3, "dice": [0.1, 0.49, 0.5, 0.9, np.nan, 0.8, 0.2, 0.3, 0.95]})
    fr = S.failure_rate(df).set_index("system")
    assert fr.loc["a", "n"] == 5 and fr.loc["a", "n_failures"] == 2 and fr.loc["a", "n_undefined"] == 1
    assert fr.loc["a", "failure_rate"] == pytest.approx(0.4)
    assert (fr.loc["a", "ci_low"], fr.loc["a", "ci_high"]) == pytest.approx(proportion_confint(2, 5, method="wilson"))
    assert fr.loc["b", "failure_rate"] == pytest.approx(2 / 3)


def test_volume_bins_and_grouped_summary():
    bins = S.volume_bins(pd.Series([0.0, 4.9, 5.0, 14.9, 15.0, 30.0, 59.0, 60.0, 300.0]))
    assert bins.tolist() == ["empty", "<5 mL", "5-15 mL", "5-15 mL", "15-30 mL", "30-60 mL", "30-60 mL",
                             ">=60 mL", ">=60 mL"]
    df = cohort(k=2, n=9)
    g = S.grouped_summary(df, "dice", "site")
    assert len(g) == 6 and g["n_cases"].tolist() == [3] * 6 and list(g["system"][:3]) == ["S0"] * 3
    sub = df[(df.system == "S1") & (df.site == "B")]["dice"]
    row = g[(g.system == "S1") & (g.site == "B")].iloc[0]
    assert row["mean"] == pytest.approx(sub.mean()) and row["sd"] == pytest.approx(sub.std(ddof=1))


def test_describe_reports_nonfinite_and_empty_counts():
    df = pd.DataFrame({"system": ["a"] * 4, "hd95_mm": [1.0, 3.0, np.inf, np.nan],
                       "empty_ref": [False, False, False, True], "empty_pred": [False, False, True, True]})
    d = S.describe(df, "hd95_mm").iloc[0]
    assert (d["n_cases"], d["n_finite"], d["n_inf"], d["n_nan"]) == (4, 2, 1, 1)
    assert (d["n_empty_ref"], d["n_empty_pred"]) == (1, 2) and d["mean"] == pytest.approx(2.0)


def test_analyze_metric_bundle_is_json_ready():
    import json

    df = cohort(k=2, n=12)
    out = S.analyze_metric(df, "dice", n_boot=200)
    assert {"describe", "ols", "anova", "pairwise_t", "paired", "mixed_model", "mixed_model_site", "by_site",
            "by_volume_bin"} <= set(out)
    text = json.dumps(S.jsonable(out), allow_nan=False)
    assert '"F"' in text
    assert S.jsonable({"a": np.float64("nan"), "b": np.inf, "c": np.int64(3)}) == {"a": None, "b": "inf", "c": 3}
    with pytest.raises(ValueError, match="not a column"):
        S.analyze_metric(df, "hd95_mm")


def test_metric_direction():
    assert S.metric_direction("dice") == "higher" and S.metric_direction("nsd_2mm") == "higher"
    assert S.metric_direction("hd95_mm") == "lower" and S.metric_direction("rvd") == "zero"
    assert S.metric_direction("volume_ref_ml") is None


# ------------------------------------------------------------------ mixed model: exact REML, boundary, drops

def block_anova_reml(wide: np.ndarray) -> tuple[float, float]:
    """Exact REML (patient variance, residual variance) of a balanced patients x systems design.

    Randomised-block ANOVA: E[MS_error] = s2, E[MS_patient] = s2 + k * sb2; REML equals these
    moment estimators when sb2 >= 0, else sb2 = 0 and s2 is the pooled residual of the fixed part.
    """
    n, k = wide.shape
    grand = wide.mean()
    ss_p = k * ((wide.mean(axis=1) - grand) ** 2).sum()
    ss_s = n * ((wide.mean(axis=0) - grand) ** 2).sum()
    ss_e = ((wide - grand) ** 2).sum() - ss_p - ss_s
    ms_p, ms_e = ss_p / (n - 1), ss_e / ((n - 1) * (k - 1))
    if ms_p >= ms_e:
        return (ms_p - ms_e) / k, ms_e
    return 0.0, (ss_p + ss_e) / (k * (n - 1))


@pytest.mark.parametrize("seed", [0, 2])
def test_mixed_model_equals_exact_reml_of_balanced_design(seed):
    df = cohort(k=3, n=20, seed=seed)
    wide = df.pivot(index="case", columns="system", values="dice")
    sb2, s2 = block_anova_reml(wide.to_numpy())
    assert sb2 > 0
    res = S.mixed_model(df, "dice")
    assert res["converged"] and res["on_boundary"] == []
    assert res["patient_var"] == pytest.approx(sb2, rel=1e-8)
    assert res["residual_var"] == pytest.approx(s2, rel=1e-8)
    se = {f["term"]: f["se"] for f in res["fixed_effects"]}
    assert se["system[S1]"] == pytest.approx(np.sqrt(2 * s2 / 20), rel=1e-8)
    # Dice variances are ~1e-3: statsmodels' absolute 0.01 boundary warning must not appear
    assert not any("boundary" in m or "statsmodels" in m for m in res["messages"]), res["messages"]


def test_mixed_model_variance_on_the_boundary_is_exactly_zero():
    rng = np.random.default_rng(1)
    e = rng.normal(0, 0.05, (15, 3))
    e -= e.mean(axis=1, keepdims=True)  # every patient has the same mean: MS_patient = 0 < MS_error
    df = pd.DataFrame([{"system": f"S{j}", "case": f"c{i:02d}", "dice": 0.7 + 0.02 * j + e[i, j]}
                       for j in range(3) for i in range(15)])
    sb2, s2 = block_anova_reml(df.pivot(index="case", columns="system", values="dice").to_numpy())
    assert sb2 == 0.0
    res = S.mixed_model(df, "dice")
    assert res["converged"] and res["patient_var"] == 0.0 and res["on_boundary"] == ["patient_var"]
    assert res["residual_var"] == pytest.approx(s2, rel=1e-8)
    assert sum("patient variance estimated at 0" in m for m in res["messages"]) == 1
    assert not any(m.startswith("statsmodels") for m in res["messages"]), res["messages"]


def test_mixed_model_nested_scans_equal_exact_reml():
    """Patients x 2 scans x 3 systems, balanced: REML = the nested ANOVA moment estimators."""
    rng = np.random.default_rng(4)
    n_pat, n_scan, k = 10, 2, 3
    pat, scan = rng.normal(0, 0.08, n_pat), rng.normal(0, 0.05, (n_pat, n_scan))
    rows = [{"system": f"S{j}", "case": f"p{p}s{c}", "patient_id": f"p{p}",
             "dice": 0.7 + 0.02 * j + pat[p] + scan[p, c] + rng.normal(0, 0.03)}
            for j in range(k) for p in range(n_pat) for c in range(n_scan)]
    df = pd.DataFrame(rows)
    y = np.array([[[df.loc[(df.system == f"S{j}") & (df.case == f"p{p}s{c}"), "dice"].item() for j in range(k)]
                   for c in range(n_scan)] for p in range(n_pat)])
    grand = y.mean()
    ss_p = n_scan * k * ((y.mean(axis=(1, 2)) - grand) ** 2).sum()
    ss_c = k * ((y.mean(axis=2) - y.mean(axis=(1, 2))[:, None]) ** 2).sum()
    ss_s = n_pat * n_scan * ((y.mean(axis=(0, 1)) - grand) ** 2).sum()
    ss_e = ((y - grand) ** 2).sum() - ss_p - ss_c - ss_s
    ms_p, ms_c = ss_p / (n_pat - 1), ss_c / (n_pat * (n_scan - 1))
    ms_e = ss_e / ((n_pat * n_scan - 1) * (k - 1))
    assert ms_p > ms_c > ms_e
    res = S.mixed_model(df, "dice", patient_col="patient_id")
    assert res["n_groups"] == n_pat and res["converged"]
    assert res["residual_var"] == pytest.approx(ms_e, rel=1e-7)
    assert res["case_var"] == pytest.approx((ms_c - ms_e) / k, rel=1e-7)
    # before: statsmodels' vc_formula silently dropped the patient intercept (patient_var NaN)
    assert res["patient_var"] == pytest.approx((ms_p - ms_c) / (n_scan * k), rel=1e-7)


def test_mixed_model_site_missing_for_some_cases_is_complete_case():
    df = cohort(k=3, n=24)
    df.loc[df["case"].isin(["c001", "c005"]), "site"] = np.nan
    res = S.mixed_model(df, "dice", site_col="site")
    assert res["n_cases"] == 22 and res["n_obs"] == 66 and res["n_excluded_missing_site"] == 2
    assert any("'site' missing for 2 of 24 case(s)" in m and "complete-case" in m for m in res["messages"])
    ref = S.mixed_model(df[df["site"].notna()], "dice", site_col="site")
    assert [f["coef"] for f in res["fixed_effects"]] == pytest.approx([f["coef"] for f in ref["fixed_effects"]])
    out = S.analyze_metric(df, "dice", n_boot=50)  # used to raise a patsy error
    assert out["mixed_model_site"]["n_excluded_missing_site"] == 2
    assert "(no site)" in set(out["by_site"]["site"])


def test_mixed_model_names_a_system_without_values_and_keeps_the_others():
    df = cohort(k=3, n=12).rename(columns={"dice": "hd95_mm"})
    df.loc[df["system"] == "S0", "hd95_mm"] = np.nan  # the reference level itself
    res = S.mixed_model(df, "hd95_mm")
    assert res["dropped_systems"] == [{"system": "S0", "reason": "no finite hd95_mm value"}]
    assert res["reference_system"] == "S1" and {f["term"] for f in res["fixed_effects"]} == {"Intercept", "system[S2]"}


def test_patient_ids_partly_missing_are_reported():
    df = cohort(k=2, n=12)
    df["patient_id"] = df["case"].map(lambda c: f"p{int(c[1:]) // 2}")
    df.loc[df["case"] == "c003", "patient_id"] = None
    res = S.mixed_model(df, "dice", patient_col="patient_id")
    assert res["n_groups"] == 12 and any("'patient_id' missing for 1 case(s)" in m for m in res["messages"])


def test_a_system_without_any_finite_value_is_named_in_every_test():
    df = cohort(k=3, n=12).rename(columns={"dice": "hd95_mm"})
    df.loc[df["system"] == "S1", "hd95_mm"] = np.nan  # e.g. a model that predicts nothing
    out = S.analyze_metric(df, "hd95_mm", n_boot=50)
    assert out["anova"]["k"] == 2 and out["anova"]["df_between"] == 1
    assert out["anova"]["dropped_systems"] == [{"system": "S1", "reason": "no finite hd95_mm value"}]
    assert any("S1 dropped: no finite hd95_mm value" == m for m in out["anova"]["messages"])
    assert out["excluded_systems"] == [{"system": "S1", "reason": "no finite hd95_mm value", "tests": [
        "OLS", "ANOVA", "mixed model", "site-adjusted mixed model", "Welch t-tests", "Student t-tests",
        "paired tests"]}]
    welch = out["pairwise_t"].set_index(["a", "b"])
    assert "fewer than 2 finite hd95_mm values in S1 (0)" in welch.loc[("S0", "S1"), "message"]
    assert np.isfinite(welch.loc[("S0", "S2"), "p"]) and welch.loc[("S0", "S2"), "message"] == ""
    json_ready = S.jsonable(out["excluded_systems"])
    assert json_ready[0]["system"] == "S1"
    # nothing excluded: an empty list
    assert S.analyze_metric(cohort(k=2, n=8), "dice", n_boot=20)["excluded_systems"] == []


def test_wilcoxon_zero_differences_are_counted_and_stated():
    df = cohort(k=2, n=12)
    same = df["case"].isin(["c000", "c001", "c002"])
    df.loc[same & (df.system == "S1"), "dice"] = df.loc[same & (df.system == "S0"), "dice"].to_numpy()
    r = S.paired_tests(df, "dice", n_boot=20).iloc[0]
    assert r["n_pairs"] == 12 and r["n_zero_diff"] == 3
    assert "Wilcoxon: 3 zero difference(s) dropped (zero_method='wilcox'), ranked on 9" in r["message"]
    wide = df.pivot(index="case", columns="system", values="dice")
    assert r["p_wilcoxon"] == pytest.approx(sps.wilcoxon(wide["S0"] - wide["S1"]).pvalue)


def test_anova_constant_within_systems_is_stated():
    df = pd.DataFrame({"system": ["a"] * 3 + ["b"] * 3, "dice": [0.5] * 3 + [0.7] * 3})
    out = S.anova_oneway(df, "dice")
    assert any("constant within every system" in m for m in out["messages"])


def test_mixed_model_without_residual_variance_is_not_fitted():
    """Every case's difference between systems identical: REML is unbounded (residual 0)."""
    df = pd.DataFrame([{"system": s, "case": f"c{i}", "site": "AB"[i % 2], "dice": 0.5 + 0.1 * i + d}
                       for s, d in (("a", 0.0), ("b", 0.05), ("c", 0.1)) for i in range(4)])
    for res in (S.mixed_model(df, "dice"), S.mixed_model(df, "dice", site_col="site")):
        assert "fixed_effects" not in res
        assert any("no residual variance, mixed model not fitted" in m for m in res["messages"]), res["messages"]


def test_cases_without_reference_volume_are_their_own_stratum():
    assert S.volume_bins(pd.Series([np.nan, 3.0])).tolist() == ["(no volume)", "<5 mL"]
    df = cohort(k=2, n=9)
    df.loc[df["case"] == "c004", "reference_volume_ml"] = np.nan
    g = S.analyze_metric(df, "dice", n_boot=20)["by_volume_bin"]
    assert g.loc[g["volume_bin"] == "(no volume)", "n_cases"].tolist() == [1, 1]
    assert g.groupby("system")["n_cases"].sum().tolist() == [9, 9]  # no case silently absent
