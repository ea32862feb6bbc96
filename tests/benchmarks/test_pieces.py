"""Benchmark building blocks without nnU-Net: case subset, derived configuration, resumable steps,
training-log parsing, the results table on fabricated per-case metrics (fast)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nnunet_iph.benchmarking.cpu_config import add_cpu_configurations, cpu_configurations, patch_size_for
from nnunet_iph.benchmarking.protocol import PlanSpec
from nnunet_iph.benchmarking.results import MODEL_COL, headline_markdown, headline_table
from nnunet_iph.benchmarking.steps import Step, StepRunner
from nnunet_iph.benchmarking.subset import SLICE_TABLE, filter_slice_table, make_subset, select_patients
from nnunet_iph.benchmarking.training_logs import fold_training_summary, parse_training_log

HEADER = b"PatientNumber,SliceNumber,Intraventricular,Intraparenchymal,Subarachnoid,Epidural,Subdural,No_Hemorrhage,Fracture_Yes_No\r\n"


def fake_release(root: Path, positives=(49, 50, 51), negatives=(54, 55, 56, 57, 58)) -> Path:
    rows = []
    for pid in sorted(positives + negatives):
        for sl in (1, 2):
            hem = pid in positives and sl == 2
            rows.append(f"{pid},{sl},0,{int(hem)},0,0,0,{int(not hem)},0\r\n".encode())
        for sub in ("ct_scans", "masks"):
            (root / sub).mkdir(parents=True, exist_ok=True)
            (root / sub / f"{pid:03d}.nii.gz").write_bytes(b"x")
    (root / SLICE_TABLE).write_bytes(HEADER + b"".join(rows))
    return root


def test_selection_is_seeded_and_keeps_every_positive():
    pos, neg = [1, 2, 3], list(range(10, 30))
    a = select_patients(pos, neg, 5, seed=0)
    assert a == select_patients(pos, neg, 5, seed=0) and set(pos) <= set(a) and len(a) == 8
    assert a != select_patients(pos, neg, 5, seed=1)
    assert select_patients(pos, neg, None, 0) == sorted(pos + neg)
    assert len(select_patients(pos, neg, 2, 0, positives=1)) == 3


def test_subset_links_and_filters_the_table_byte_for_byte(tmp_path):
    src = fake_release(tmp_path / "release")
    rec = make_subset(src, tmp_path / "sub", negatives=2, seed=0)
    assert rec["n_positive"] == 3 and rec["n_negative"] == 2
    kept = sorted(p.name for p in (tmp_path / "sub" / "ct_scans").iterdir())
    assert len(kept) == 5 and all((tmp_path / "sub" / "ct_scans" / k).is_symlink() for k in kept)
    table = (tmp_path / "sub" / SLICE_TABLE).read_bytes()
    assert table.startswith(HEADER) and table.count(b"\r\n") == 1 + 2 * 5
    before = {p.name: p.lstat().st_mtime_ns for p in (tmp_path / "sub").rglob("*")}
    make_subset(src, tmp_path / "sub", negatives=2, seed=0)  # same selection: nothing rewritten
    assert {p.name: p.lstat().st_mtime_ns for p in (tmp_path / "sub").rglob("*") if p.name != "selection.json"} == \
        {k: v for k, v in before.items() if k != "selection.json"}
    make_subset(src, tmp_path / "sub", negatives=0, seed=0)  # another selection replaces the links
    assert len(list((tmp_path / "sub" / "masks").iterdir())) == 3


def test_subset_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="release layout"):
        make_subset(tmp_path, tmp_path / "sub", 1, 0)
    with pytest.raises(ValueError, match="line 2: PatientNumber"):
        filter_slice_table(HEADER + b"abc,1\r\n", {1}, Path("t.csv"))
    src = fake_release(tmp_path / "r")
    (src / "masks" / "050.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="no file for patient 050"):
        make_subset(src, tmp_path / "s", 0, 0)


def plane_plans(spacing, median, name="nnUNetPlans_axial") -> dict:
    arch = {"network_class_name": "x.PlainConvUNet", "arch_kwargs": {"n_stages": 8, "conv_op": "torch.nn.Conv2d",
            "norm_op": "torch.nn.InstanceNorm2d", "nonlin": "torch.nn.LeakyReLU"},
            "_kw_requires_import": ["conv_op", "norm_op", "nonlin"]}
    return {"plans_name": name, "configurations": {"2d": {"spacing": spacing, "median_image_size_in_voxels": median,
                                                          "patch_size": [512, 512], "batch_size": 12,
                                                          "architecture": arch}}}


def test_cpu_configuration_keeps_coarse_axes_and_rounds_the_patch():
    spec = PlanSpec(spacing_mm=2.0, batch_size=12, features_per_stage=(16, 32, 64, 128, 256), max_patch=128,
                    arch_kwargs={"width": 0.25})
    axial = cpu_configurations(plane_plans([0.43, 0.43], [512, 512]), spec)
    main = axial["2d_cpu"]
    assert main["spacing"] == [2.0, 2.0] and main["patch_size"] == [112, 112] and main["batch_size"] == 12
    assert main["data_identifier"] == "nnUNetPlans_axial_2d_cpu" and main["inherits_from"] == "2d"
    kw = main["architecture"]["arch_kwargs"]
    assert kw["features_per_stage"] == [16, 32, 64, 128, 256] and kw["strides"][0] == [1, 1] and kw["n_stages"] == 5
    assert kw["norm_op"] == "torch.nn.InstanceNorm2d" and "width" not in kw
    arch = axial["2d_cpu_arch"]
    assert arch["inherits_from"] == "2d_cpu" and arch["architecture"]["arch_kwargs"]["width"] == 0.25
    coronal = cpu_configurations(plane_plans([5.0, 0.43], [37, 512], "nnUNetPlans_coronal"), spec)["2d_cpu"]
    assert coronal["spacing"] == [5.0, 2.0] and coronal["patch_size"] == [48, 112]
    assert patch_size_for([2000], [1.0], [2.0], 16, 128) == [128] and patch_size_for([3], [1.0], [1.0], 16, 128) == [16]


def test_add_cpu_configurations_reports_changes_and_needs_2d():
    spec = PlanSpec()
    plans = plane_plans([0.43, 0.43], [512, 512])
    new, changed = add_cpu_configurations(plans, spec)
    assert changed and "2d_cpu" not in plans["configurations"]
    assert add_cpu_configurations(new, spec)[1] is False
    with pytest.raises(ValueError, match="no '2d' configuration"):
        cpu_configurations({"plans_name": "p", "configurations": {}}, spec)


def test_steps_skip_finished_outputs_and_record_attempts(tmp_path):
    out = tmp_path / "out.txt"
    calls = []

    def make(fail: bool):
        def run():
            calls.append(fail)
            if fail:
                raise RuntimeError("interrupted")
            out.write_text("ok")
            return {"n": 1}
        return Step("write", run, out.is_file, [out])

    state = tmp_path / "state.json"
    with pytest.raises(RuntimeError, match="interrupted"):
        StepRunner(state, progress=False, log=lambda s: None).run([make(True)])
    rec = json.loads(state.read_text())["steps"]["write"]
    assert rec["status"] == "failed" and "interrupted" in rec["attempts"][0]["error"]
    runner = StepRunner(state, progress=False, log=lambda s: None)
    assert runner.run([make(False)]) == {"write": "done"}
    assert StepRunner(state, progress=False, log=lambda s: None).run([make(False)]) == {"write": "skipped"}
    assert calls == [True, False]
    rec = json.loads(state.read_text())["steps"]["write"]
    assert rec["status"] == "done" and len(rec["attempts"]) == 2 and rec["attempts"][1]["info"] == {"n": 1}
    with pytest.raises(RuntimeError, match="outputs are missing"):
        StepRunner(state, progress=False, log=lambda s: None).run(
            [Step("noop", lambda: None, lambda: False, [tmp_path / "never"])])


LOG = """2026-01-01 10:00:00.0: Epoch 0
2026-01-01 10:00:00.1: Current learning rate: 0.01
2026-01-01 10:00:10.0: train_loss 0.1
2026-01-01 10:00:10.0: Pseudo dice [np.float32(0.0)]
2026-01-01 10:00:10.0: Epoch time: 10.0 s
2026-01-01 10:00:10.1: Epoch 1
2026-01-01 10:00:22.0: Pseudo dice [np.float32(0.4123)]
2026-01-01 10:00:22.0: Epoch time: 12.0 s
2026-01-01 10:00:22.1: Epoch 2
"""


def test_training_log_parsing(tmp_path):
    parsed = parse_training_log(LOG)
    assert parsed["epoch_times_s"] == [10.0, 12.0] and parsed["pseudo_dice"] == [[0.0], [0.4123]]
    assert parsed["epochs_started"] == [0, 1, 2]
    (tmp_path / "training_log_1.txt").write_text(LOG)
    (tmp_path / "validation").mkdir()
    (tmp_path / "validation" / "summary.json").write_text(json.dumps({"foreground_mean": {"Dice": 0.5}}))
    s = fold_training_summary(tmp_path, iterations_per_epoch=10)
    assert s["epochs_logged"] == 2 and s["s_per_iteration"] == 1.2 and s["validation_dice_nnunet"] == 0.5


def fabricated_table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    cases = [f"c{i}" for i in range(10)]
    for model, shift in (("nnU-Net", 0.0), ("better", 0.15), ("same", 0.0)):
        for i, case in enumerate(cases):
            neg = i >= 8
            dice = 1.0 if neg else float(np.clip(0.45 + 0.06 * i + shift + rng.normal(0, 0.01), 0, 1))
            rows.append({MODEL_COL: model, "case": case, "dice": dice, "hd95_mm": 0.0 if neg else 20 - 10 * shift - i,
                         "volume_ref_ml": 0.0 if neg else 10.0,
                         "volume_pred_ml": (1.25 if model == "same" and i == 9 else 0.0) if neg else 10.0 + 5 * (0.2 - shift),
                         "lesions_false_positive": np.nan if neg else i % 3,
                         "empty_ref": neg, "empty_pred": neg and not (model == "same" and i == 9)})
    return pd.DataFrame(rows)


def test_headline_table_on_fabricated_metrics():
    summary, paired = headline_table(fabricated_table(), ["nnU-Net", "better", "same"], "nnU-Net")
    s = summary.set_index("model")
    assert s.loc["nnU-Net", "n_positive"] == 8 and s.loc["nnU-Net", "n_negative"] == 2
    assert s.loc["better", "dice_mean"] > s.loc["nnU-Net", "dice_mean"] + 0.1
    assert s.loc["same", "negatives_with_false_positive"] == 1 and s.loc["nnU-Net", "negatives_with_false_positive"] == 0
    assert s.loc["nnU-Net", "abs_volume_error_ml_mean"] == pytest.approx(1.0)
    assert s.loc["nnU-Net", "n_failures"] == 1  # only case 0 (Dice ~0.45) is below 0.5
    assert s.loc["nnU-Net", "hd95_mm_median"] == pytest.approx(16.5)  # 20, 19, ..., 13
    assert s.loc["nnU-Net", "fp_components_mean"] == pytest.approx(7 / 8)  # i % 3 over cases 0..7
    assert s.loc["same", "fp_volume_negatives_ml"] == pytest.approx(1.25)
    assert s.loc["same", "fp_volume_each_ml"] == "0.00 / 1.25"
    dice = paired[paired["metric"] == "dice"].set_index("model")
    assert dice.loc["better", "mean_diff"] == pytest.approx(0.15, abs=0.02)
    assert dice.loc["better", "ci_low"] > 0 and dice.loc["better", "p_wilcoxon"] < 0.01
    assert dice.loc["better", "p_wilcoxon_holm"] >= dice.loc["better", "p_wilcoxon"]
    assert dice.loc["same", "n_pairs"] == 8
    md = headline_markdown(summary, paired)
    assert md.count("\n") == 5 and "| nnU-Net |" in md and "baseline" in md and "| better | " in md and "[+0.1" in md
    assert "| 0.00 / 1.25 |" in md and "median HD95 (mm)" in md


def test_headline_table_refuses_missing_models():
    with pytest.raises(ValueError, match="no per-case results for model"):
        headline_table(fabricated_table(), ["nnU-Net", "ghost"], "nnU-Net")
    with pytest.raises(ValueError, match="baseline 'x' is not among"):
        headline_table(fabricated_table(), ["nnU-Net"], "x")


def test_analysis_is_redone_when_a_model_is_added_or_its_predictions_change(tmp_path):
    import os

    from nnunet_iph.benchmarking.ctich import CTICHBenchmark
    from nnunet_iph.benchmarking.protocol import build_protocol

    raw = {"name": "t", "kind": "cpu", "dataset_id": 700, "dataset_name": "T",
           "data": {"negatives": 0, "folds": 2, "eval_folds": [0]},
           "plan": {"batch_size": 2, "features_per_stage": [4, 8], "max_patch": 32},
           "schedule": {"epochs": 1, "iterations": 2},
           "model": [{"name": "base", "trainer": "nnUNetTrainer", "baseline": True}]}
    bench = CTICHBenchmark(build_protocol(raw), tmp_path / "w", progress=False, log=lambda m: None)
    (run,) = bench.protocol.runs()
    val = bench.ws.fold_dir(bench.protocol.dataset, run) / "validation"
    val.mkdir(parents=True)
    (val / "c1.nii.gz").write_bytes(b"x")
    out = bench.ws.results / "analysis"
    out.mkdir(parents=True)
    (out / "report.md").write_text("r")
    per_case = bench.ws.results / "per_case.csv"
    pd.DataFrame({MODEL_COL: ["base"], "case": ["c1"]}).to_csv(per_case, index=False)
    assert bench._analysis_current(out)
    old = per_case.stat().st_mtime
    os.utime(val / "c1.nii.gz", (old + 10, old + 10))  # the model was re-trained: its predictions are newer
    assert not bench._analysis_current(out)
    os.utime(per_case, (old + 20, old + 20))
    assert bench._analysis_current(out)
    raw["model"].append({"name": "base + brain", "trainer": "nnUNetTrainer", "restrict_to_brain": True})
    bigger = CTICHBenchmark(build_protocol(raw), tmp_path / "w", progress=False, log=lambda m: None)
    assert not bigger._analysis_current(out)  # a model added to the protocol is not in per_case.csv
