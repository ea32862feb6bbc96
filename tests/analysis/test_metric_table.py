"""The metric table is the one source of names, directions, decimals, summary / report membership and
empty-mask values: every consumer must say what the table says."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from nnunet_iph.analysis import evaluate, metric_table as T, metrics as M, report, stats, tables
from nnunet_iph.postprocessing.choose import ChoiceResult, format_choice
from nnunet_iph.postprocessing.operations import PostprocessingConfig

SHAPE, SPACING = (6, 16, 16), (5.0, 0.5, 0.5)


def _masks():
    empty = np.zeros(SHAPE, np.uint8)
    lesion = empty.copy()
    lesion[2:4, 4:9, 4:10] = 1
    shifted = np.roll(lesion, 2, axis=2)
    return {"both_empty": (empty, empty), "ref_empty": (empty, lesion), "pred_empty": (lesion, empty),
            None: (lesion, shifted)}


@pytest.fixture(scope="module")
def rows():
    return {kind: M.case_metrics(r, p, SPACING)[0] for kind, (r, p) in _masks().items()}


@pytest.fixture(scope="module")
def summary(rows):
    table = pd.DataFrame([{"case": str(kind), **row} for kind, row in rows.items()])
    return evaluate.summarize(table)["per_label"]["1"]


@pytest.mark.parametrize("spec", T.METRICS, ids=lambda m: m.name)
def test_every_consumer_agrees_with_the_table(spec, summary):
    col = spec.column(2.0)
    assert col in M.metric_columns(2.0) and col in M.case_metrics(*_masks()[None], SPACING)[0]
    assert stats.metric_direction(col) == spec.direction
    assert tables.default_decimals(col) == spec.decimals
    frame = pd.DataFrame({"row": ["a", "a"], "model": ["x", "y"], col: [0.25, 0.5]})
    assert tables.build_table(frame, col).direction == spec.direction
    assert (spec.name in report.DEFAULT_METRICS) == spec.report
    assert (col in summary["all_cases"]) == (spec.summary == "mean")
    assert (col in summary["lesions"]) == (spec.summary == "sum")
    assert (col in evaluate.COUNT_COLUMNS) == (spec.summary == "sum")
    if spec.direction is None:
        with pytest.raises(ValueError, match="no better direction"):
            T.objective_sign(col)
    else:  # choose-postprocessing optimises in the table's direction
        result = ChoiceResult(PostprocessingConfig(), col, 0.5, 0.25,
                              before=pd.DataFrame(columns=["case", "label", col]),
                              after=pd.DataFrame(columns=["case", "label", col]))
        assert result.to_dict()["direction"] == spec.direction
        assert T.DIRECTION_TEXT[spec.direction] in format_choice(result)


@pytest.mark.parametrize("kind", [k for k, _ in T.EMPTY_KINDS])
@pytest.mark.parametrize("spec", T.METRICS, ids=lambda m: m.name)
def test_empty_masks_take_the_tables_values(spec, kind, rows):
    value = getattr(spec, kind)
    got = rows[kind][spec.column(2.0)]
    if value == T.COMPUTED:
        assert np.isfinite(got)
    elif value == T.PENALTY:
        assert got == pytest.approx(M.image_diagonal_mm(SHAPE, SPACING))
    elif math.isnan(value):
        assert math.isnan(got)
    else:
        assert got == value
    if value != T.COMPUTED:
        assert spec.label in M.EMPTY_POLICY


def test_lookup_by_pattern_alias_and_unknown():
    assert T.metric_direction("nsd_1.5mm") == "higher" and T.metric_direction("f1") == "higher"
    assert T.metric_direction("rvd") == "zero" and T.metric_direction("volume_ref_ml") is None
    assert T.metric_direction("nsd_count") is None and T.metric_decimals("age") == T.DEFAULT_DECIMALS
    assert T.objective_values("rvd", [-0.5, 0.25]).tolist() == [0.5, 0.25]
    assert T.objective_sign("rvd") == -1 and T.objective_name("rvd") == "|rvd|"
