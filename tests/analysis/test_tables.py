"""Reference-study tables: mean ± SD per (row, model), best per row in bold, three formats."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nnunet_iph.analysis import tables as T


def frame(values: dict[tuple[str, str], list[float]], metric: str = "dice") -> pd.DataFrame:
    rows = []
    for (row, model), vals in values.items():
        rows += [{"row": row, "model": model, "case": f"c{i}", metric: v} for i, v in enumerate(vals)]
    return pd.DataFrame(rows)


def test_mean_sd_cells_and_bold_best_higher():
    df = frame({("axial", "UNet"): [0.8, 0.6], ("axial", "ResUNet"): [0.9, 0.7],
                ("coronal", "UNet"): [0.5, 0.7], ("coronal", "ResUNet"): [0.4, 0.6]})
    t = T.build_table(df, "dice")
    assert list(t.cells.index) == ["axial", "coronal"] and list(t.cells.columns) == ["UNet", "ResUNet"]
    sd = np.std([0.8, 0.6], ddof=1)
    assert t.cells.loc["axial", "UNet"] == f"0.700 ± {sd:.3f}"
    assert t.best.loc["axial"].tolist() == [False, True] and t.best.loc["coronal"].tolist() == [True, False]
    md = T.to_markdown(t)
    assert "| axial | 0.700 ± 0.141 | **0.800 ± 0.141** |" in md
    assert "| coronal | **0.600 ± 0.141** | 0.500 ± 0.141 |" in md
    tex = T.to_latex(t)
    assert r"\textbf{0.800 $\pm$ 0.141}" in tex and r"0.700 $\pm$ 0.141 &" in tex and r"\toprule" in tex
    long = T.to_long(t)
    assert long.loc[long["best"], ["row", "model"]].values.tolist() == [["axial", "ResUNet"], ["coronal", "UNet"]]
    assert long["n"].tolist() == [2, 2, 2, 2]


def test_lower_is_better_and_ties_and_zero_direction():
    df = frame({("2d", "A"): [3.0, 5.0], ("2d", "B"): [2.0, 4.0], ("2d", "C"): [2.0, 4.0]}, "hd95_mm")
    t = T.build_table(df, "hd95_mm")
    assert t.direction == "lower" and t.decimals == 2
    assert t.best.loc["2d"].tolist() == [False, True, True]  # tie: both bold
    df = frame({("2d", "A"): [-0.3, -0.1], ("2d", "B"): [0.1, 0.2]}, "rvd")
    assert T.build_table(df, "rvd").best.loc["2d"].tolist() == [False, True]  # |0.15| < |-0.2|


def test_no_bold_for_single_model_or_unknown_direction():
    df = frame({("2d", "A"): [0.5, 0.7]})
    assert not T.build_table(df, "dice").best.to_numpy().any()
    df = frame({("2d", "A"): [5.0, 7.0], ("2d", "B"): [1.0, 2.0]}, "volume_pred_ml")
    t = T.build_table(df, "volume_pred_ml")
    assert t.direction is None and not t.best.to_numpy().any() and "**" not in T.to_markdown(t)


def test_missing_cells_and_nonfinite_notes():
    df = frame({("axial", "A"): [1.0, np.inf, 3.0], ("axial", "B"): [2.0, 2.0, 2.0], ("sagittal", "B"): [4.0]},
               "hd95_mm")
    t = T.build_table(df, "hd95_mm")
    assert t.cells.loc["sagittal", "A"] == "–" and t.cells.loc["sagittal", "B"] == "4.00"
    assert t.n_nonfinite.loc["axial", "A"] == 1 and t.n.loc["axial", "A"] == 2
    assert any("A / axial: 1 non-finite" in n for n in t.notes)
    assert "non-finite" in T.to_markdown(t) and "non-finite" in T.to_latex(t)


def test_latex_escaping():
    df = frame({("nnUNetPlans_2d", "Trainer_100%"): [0.5, 0.6], ("nnUNetPlans_2d", "B"): [0.1, 0.2]})
    tex = T.to_latex(T.build_table(df, "dice"))
    assert r"nnUNetPlans\_2d" in tex and r"Trainer\_100\%" in tex


def test_write_table_files(tmp_path):
    df = frame({("axial", "A"): [0.5, 0.6], ("axial", "B"): [0.7, 0.8]})
    paths = T.write_table(T.build_table(df, "dice"), tmp_path, "val_dice")
    assert {p.name for p in paths.values()} == {"val_dice.md", "val_dice.tex", "val_dice.csv"}
    back = pd.read_csv(paths["csv"])
    assert back["best"].tolist() == [False, True] and back["mean"].tolist() == pytest.approx([0.55, 0.75])
    assert "**0.750 ± 0.071**" in paths["md"].read_text(encoding="utf-8")


def test_missing_column_is_a_clear_error():
    with pytest.raises(ValueError, match="column 'row'"):
        T.build_table(pd.DataFrame({"model": ["a"], "dice": [1.0]}), "dice")
