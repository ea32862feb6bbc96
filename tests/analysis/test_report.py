"""The report folder: results.json numbers equal the statistics, figures exist, CLI end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from nnunet_iph.analysis.collect import add_display_columns
from nnunet_iph.analysis.report import AnalysisSettings, Doc, build_report, fmt, fmt_p
from nnunet_iph.cli import main

from test_collect import build_results, write_summary  # noqa: E402  (same folder; pytest puts it on sys.path)


def synthetic(n: int = 15, sites: str = "AB") -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    ref = rng.uniform(0.5, 50, n)
    for model in ("nnUNetTrainer", "nnUNetTrainerFocalDice"):
        for plans in ("nnUNetPlans_axial", "nnUNetPlans_coronal"):
            for i in range(n):
                rows.append({"split": "validation", "model": model, "plans": plans, "configuration": "2d",
                             "fold": str(i % 5), "case": f"c{i:02d}", "label": "1",
                             "dice": float(rng.uniform(0.3, 0.95)), "hd95_mm": float(rng.uniform(1, 20)),
                             "volume_ref_ml": ref[i], "volume_pred_ml": ref[i] * float(rng.uniform(0.7, 1.3)),
                             "reference_volume_ml": ref[i], "site": sites[i % len(sites)], "age": 30 + i,
                             "sex": "MF"[i % 2], "empty_ref": False, "empty_pred": False})
    return add_display_columns(pd.DataFrame(rows))


def md_images(report: Path) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report.read_text(encoding="utf-8"))


def test_build_report_numbers_and_files(tmp_path):
    df = synthetic()
    res = build_report(df, tmp_path, AnalysisSettings(n_boot=200, seed=3))
    for name in ("report.md", "report.html", "results.json", "per_case.csv"):
        assert (tmp_path / name).is_file()
    on_disk = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert on_disk["settings"]["seed"] == 3 and on_disk["versions"]["statsmodels"]
    a = on_disk["analyses"]["validation"]
    anova = a["metrics"]["dice"]["anova"]
    groups = [g["dice"].to_numpy() for _, g in df.groupby("system", sort=False)]
    assert anova["F"] == pytest.approx(sps.f_oneway(*groups).statistic, rel=1e-10)
    assert (anova["df_between"], anova["df_within"]) == (3, 4 * 15 - 4)
    assert len(a["metrics"]["dice"]["paired"]) == 6 and a["systems"][0] == "nnUNetTrainer / axial"
    assert {r["model"] for r in a["tables"]["dice"]["cells"]} == {"nnUNetTrainer", "nnUNetTrainerFocalDice"}
    for rel in a["figures"].values():
        assert (tmp_path / rel).read_bytes()[:4] == b"\x89PNG"
    imgs = md_images(tmp_path / "report.md")
    assert imgs and all((tmp_path / p).is_file() for p in imgs)
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert all(f'src="{p}"' in html for p in imgs) and "<b>" in html
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "F(3, 56)" in md and "ICC(2,1)" in md and "Paired statistics" in md
    for ext in ("md", "tex", "csv"):
        assert (tmp_path / "tables" / f"validation_dice.{ext}").is_file()
    assert res["analyses"]["validation"]["n_cases"] == 15


def test_single_site_report_says_site_term_dropped(tmp_path):
    df = synthetic(n=10, sites="A").drop(columns=["age"])
    res = build_report(df, tmp_path, AnalysisSettings(n_boot=100, metrics=["dice"]))
    ols = res["analyses"]["validation"]["metrics"]["dice"]["ols"][0]
    assert any("single site ('A') -> site term dropped" in m for m in ols["messages"])
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "site term dropped" in md and "age term dropped" in md
    assert "no ages in cases.csv" in md  # the age figure is skipped and the report says so


def test_unknown_metric_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="not in the per-case table"):
        build_report(synthetic(n=5), tmp_path, AnalysisSettings(metrics=["nsd_9mm"]))


def test_formatting_helpers_and_doc():
    assert fmt(np.nan) == "–" and fmt(3) == "3" and fmt(0.12345) == "0.123" and fmt(1e-6) == "1.00e-06"
    assert fmt_p(0.0001) == "<0.001" and fmt_p(0.04567) == "0.046" and fmt_p(None) == "–"
    d = Doc()
    d.h(2, "T")
    d.table(["a", "b"], [["x|y", "1"]], bold=[[False, True]])
    md = d.to_markdown()
    assert "## T" in md and "x\\|y" in md and "**1**" in md
    assert "<td><b>1</b></td>" in d.to_html("t")


def test_analyze_cli_from_summary_json(tmp_path, capsys):
    tree = build_results(tmp_path / "tree")
    out = tmp_path / "out"
    rc = main(["analyze", str(tree["results"]), "--cases", str(tree["cases"]), "-o", str(out),
               "--metric-source", "summary", "--images", str(tree["images"]), "--n-boot", "100"])
    assert rc == 0 and "report:" in capsys.readouterr().out
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    a = res["analyses"]["validation"]
    assert a["n_cases"] == 4 and len(a["systems"]) == 3
    assert any(k.startswith("validation_overlay_") for k in a["figures"])
    assert all((out / p).is_file() for p in md_images(out / "report.md"))
    per_case = pd.read_csv(out / "per_case.csv")
    assert len(per_case) == 12 and set(per_case["site"]) == {"A", "B"}


def test_analyze_cli_errors_are_clean(tmp_path, capsys):
    tree = build_results(tmp_path / "tree")
    assert main(["analyze", str(tmp_path / "nope"), "-o", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    val = tree["dataset"] / "nnUNetTrainer__nnUNetPlans__2d" / "fold_1" / "validation"
    (val / "c03.nii.gz").unlink()
    write_summary(val, tree["labels"], ["c02"], 0)
    rc = main(["analyze", str(tree["results"]), "--cases", str(tree["cases"]), "-o", str(tmp_path / "o"),
               "--metric-source", "summary"])
    err = capsys.readouterr().err
    assert rc == 2 and "missing cases" in err
    assert main(["analyze", "-o", str(tmp_path / "o")]) == 2


@pytest.mark.slow
def test_analyze_cli_with_our_evaluator(tmp_path):
    pytest.importorskip("nnunet_iph.analysis.evaluate")
    tree = build_results(tmp_path / "tree")
    out = tmp_path / "out"
    assert main(["analyze", str(tree["results"]), "--cases", str(tree["cases"]), "-o", str(out),
                 "--labels", str(tree["labels"]), "--images", str(tree["images"]), "--n-boot", "100"]) == 0
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    a = res["analyses"]["validation"]
    assert {"dice", "hd95_mm", "assd_mm"} <= set(a["metrics"]) and a["volume_agreement"]
    assert all((out / p).is_file() for p in md_images(out / "report.md"))
    # re-analysis from the written per-case table gives the same numbers
    out2 = tmp_path / "out2"
    assert main(["analyze", "--metrics-csv", str(out / "per_case.csv"), "--cases", str(tree["cases"]),
                 "-o", str(out2), "--n-boot", "100", "--n-overlays", "0"]) == 0
    res2 = json.loads((out2 / "results.json").read_text(encoding="utf-8"))
    assert res2["analyses"]["validation"]["metrics"]["dice"]["anova"] == a["metrics"]["dice"]["anova"]


# ------------------------------------------------------------------ hardening: missing site, dropped systems, output

def test_site_missing_for_some_cases_is_complete_case_in_report_and_results(tmp_path):
    df = synthetic()
    df.loc[df["case"].isin(["c01", "c02"]), "site"] = np.nan  # used to crash with a patsy error
    res = build_report(df, tmp_path, AnalysisSettings(n_boot=50, metrics=["dice"]))
    dice = res["analyses"]["validation"]["metrics"]["dice"]
    assert dice["mixed_model_site"]["n_excluded_missing_site"] == 2
    assert dice["mixed_model_site"]["n_cases"] == 13 and dice["mixed_model"]["n_cases"] == 15
    assert all(fit["n"] == 13 for fit in dice["ols"])
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "'site' missing for 2 of 15 case(s): those cases excluded from the site-adjusted model" in md
    assert "'site' missing for 2 of 15 cases: those cases excluded (complete-case analysis)" in md
    assert "| (no site) |" in md  # the by-site table has a row for them


def test_a_model_with_undefined_hd95_everywhere_is_named(tmp_path):
    df = synthetic()
    gone = df["system"] == "nnUNetTrainerFocalDice / coronal"
    df.loc[gone, "hd95_mm"] = np.nan
    res = build_report(df, tmp_path, AnalysisSettings(n_boot=50, metrics=["dice", "hd95_mm"]))
    a = res["analyses"]["validation"]
    assert a["metrics"]["hd95_mm"]["anova"]["df_between"] == 2  # three systems left
    assert a["excluded_systems"] == [{"metric": "hd95_mm", "system": "nnUNetTrainerFocalDice / coronal",
                                      "reason": "no finite hd95_mm value",
                                      "tests": ["OLS", "ANOVA", "mixed model", "site-adjusted mixed model",
                                                "Welch t-tests", "Student t-tests", "paired tests"]}]
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert ("hd95_mm: `nnUNetTrainerFocalDice / coronal` left out of OLS, ANOVA, mixed model, site-adjusted mixed "
            "model, Welch t-tests, Student t-tests, paired tests (no finite hd95_mm value)") in md
    assert "nnUNetTrainerFocalDice / coronal dropped: no finite hd95_mm value" in md  # ANOVA notes column


def test_analyze_output_is_a_file_or_not_writable(tmp_path, capsys, monkeypatch):
    tree = build_results(tmp_path / "tree")
    args = ["analyze", str(tree["results"]), "--cases", str(tree["cases"]), "--metric-source", "summary"]
    target = tmp_path / "taken.txt"
    target.write_text("keep me")
    assert main([*args, "-o", str(target)]) == 2
    err = capsys.readouterr().err
    assert f"output folder {target}: is a file, expected a folder" in err and "Traceback" not in err
    assert target.read_text() == "keep me"
    assert main([*args, "-o", str(target / "sub")]) == 2
    assert f"output folder {target / 'sub'}: {target} is a file, not a folder" in capsys.readouterr().err
    import tempfile

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    assert main([*args, "-o", str(tmp_path / "new" / "out")]) == 2
    assert f"cannot write to {tmp_path} (Permission denied)" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()  # checked before any scoring: nothing created


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
                    reason="root writes into read-only folders")
def test_analyze_read_only_output_folder(tmp_path, capsys):
    tree = build_results(tmp_path / "tree")
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert main(["analyze", str(tree["results"]), "--cases", str(tree["cases"]), "--metric-source", "summary",
                     "-o", str(out)]) == 2
        assert f"output folder {out}: cannot write to {out}" in capsys.readouterr().err
    finally:
        out.chmod(0o755)


def test_analyze_report_lists_normalised_demographics(tmp_path):
    tree = build_results(tmp_path / "tree")
    cases = pd.read_csv(tree["cases"]).assign(sex=["female", "F", "male", "m"], age=["abc", "-5", "250", "61"])
    cases.to_csv(tree["cases"], index=False)
    out = tmp_path / "out"
    assert main(["analyze", str(tree["results"]), "--cases", str(tree["cases"]), "-o", str(out),
                 "--metric-source", "summary", "--n-boot", "20", "--n-overlays", "0", "--metrics", "dice"]) == 0
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "demographics normalised: sex (case-insensitive): f/female" in md
    assert "sex 'female' -> 'F' (1 case(s))" in md and "age '250' outside the plausible range" in md
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert any("age 'abc' is not a number" in m for m in res["messages"])
    assert set(pd.read_csv(out / "per_case.csv")["sex"]) == {"F", "M"}


def test_overlays_of_a_closest_to_zero_metric_show_the_system_nearest_zero():
    """rvd: +0.6 is worse than -0.1 (the largest mean is not the best)."""
    from nnunet_iph.analysis.report import _overlay_candidates

    sub = pd.DataFrame({"system": ["over"] * 3 + ["near"] * 3, "case": ["a", "b", "c"] * 2,
                        "rvd": [0.6, 0.5, 0.7, -0.1, 0.3, -0.05],
                        "prediction_file": "p.nii.gz", "reference_file": "r.nii.gz"})
    picks = _overlay_candidates(sub, AnalysisSettings(), "rvd")
    assert {system for system, _ in picks} == {"near"}
    assert [row["case"] for _, row in picks] == ["c", "a", "b"]  # best |rvd| first, worst last
