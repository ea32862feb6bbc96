"""The one table of per-case metrics: name, direction, decimals, unit, summary / report membership
and the value each metric takes when a mask is empty.

Every consumer derives from :data:`METRICS` (no second list anywhere): the per-case columns
(:func:`metric_columns`), the empty-mask policy text (:func:`empty_policy_text`) and the rows of
labels absent from both masks, the summary of ``evaluate``, default decimals and best-cell
direction of the paper tables, the statistics' direction, the report's default metrics and the
objective of ``choose-postprocessing``. No heavy imports: the command line reads it for --help.

Directions: ``'higher'`` / ``'lower'`` is better, ``'zero'`` = closest to 0 is best (the relative
volume difference: -0.5 is as bad as +0.5, so rewarding "lower" would reward under-segmentation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Iterable, Literal, Union

from nnunet_iph.analysis.metric_defaults import DEFAULT_NSD_TOLERANCE_MM

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

Direction = Literal["higher", "lower", "zero"]
#: the value of a distance when exactly one mask is empty: the image diagonal in mm, or NaN
#: (``empty_penalty``); see :mod:`nnunet_iph.analysis.metric_defaults`
PENALTY = "penalty"
#: counted as usual from the masks (volumes, lesion counts, specificity)
COMPUTED = "computed"
EmptyValue = Union[float, str]


@dataclass(frozen=True)
class Metric:
    """One per-case metric column.

    ``name`` is the column, or a pattern with ``*`` (``nsd_*``: ``nsd_<T>mm``, the tolerance is an
    option). ``summary``: ``'mean'`` (mean / SD / median in the evaluate summary), ``'sum'``
    (counts, summed) or None. ``report``: analysed by default (``nnunet-iph analyze``). The three
    empty values are those of a case with both masks empty, the reference empty only, and the
    prediction empty only (a float, :data:`PENALTY` or :data:`COMPUTED`).
    """

    name: str
    direction: Direction | None
    decimals: int
    unit: str
    summary: Literal["mean", "sum"] | None
    report: bool
    both_empty: EmptyValue
    ref_empty: EmptyValue
    pred_empty: EmptyValue
    short: str = ""
    aliases: tuple[str, ...] = ()

    def column(self, nsd_tolerance_mm: float) -> str:
        """The concrete column name (patterns filled in with the NSD tolerance)."""
        return nsd_column(nsd_tolerance_mm) if self.name == "nsd_*" else self.name

    def matches(self, column: str) -> bool:
        if column in self.aliases:
            return True
        return fnmatchcase(column, self.name) and (self.name != "nsd_*" or column.endswith("mm"))

    @property
    def label(self) -> str:
        """Name in the empty-policy text (``hd95`` for ``hd95_mm``)."""
        return self.short or self.name


_ONE, _ZERO, _NAN = 1.0, 0.0, math.nan
_OVERLAP = dict(direction="higher", decimals=3, unit="", summary="mean", both_empty=_ONE, ref_empty=_ZERO,
                pred_empty=_ZERO)
_DISTANCE = dict(direction="lower", decimals=2, unit="mm", summary="mean", report=True, both_empty=_ZERO,
                 ref_empty=PENALTY, pred_empty=PENALTY)
_VOLUME = dict(direction=None, decimals=2, unit="mL", summary="mean", report=False, both_empty=_ZERO,
               ref_empty=COMPUTED, pred_empty=COMPUTED)
_COUNT = dict(decimals=2, unit="lesions", summary="sum", report=False, both_empty=_ZERO, ref_empty=COMPUTED,
              pred_empty=COMPUTED)

#: every per-case metric, in column order
METRICS: tuple[Metric, ...] = (
    Metric("dice", report=True, aliases=("f1",), **_OVERLAP),
    Metric("iou", report=True, **_OVERLAP),
    Metric("precision", report=True, **_OVERLAP),
    Metric("recall", report=True, aliases=("sensitivity",), **_OVERLAP),
    Metric("specificity", direction="higher", decimals=3, unit="", summary="mean", report=False,
           both_empty=_ONE, ref_empty=COMPUTED, pred_empty=COMPUTED),
    Metric("hd95_mm", short="hd95", **_DISTANCE),
    Metric("hd_mm", short="hd", **_DISTANCE),
    Metric("assd_mm", short="assd", **_DISTANCE),
    Metric("nsd_*", short="nsd", report=True, **_OVERLAP),
    Metric("rvd", direction="zero", decimals=3, unit="", summary="mean", report=True, both_empty=_ZERO,
           ref_empty=_NAN, pred_empty=-1.0),
    Metric("volume_ref_ml", **_VOLUME),
    Metric("volume_pred_ml", **_VOLUME),
    Metric("n_lesions_ref", direction=None, **_COUNT),
    Metric("lesions_detected", direction="higher", **_COUNT),
    Metric("lesions_missed", direction="lower", **_COUNT),
    Metric("lesions_false_positive", direction="lower", **_COUNT),
)

#: columns before and after the metrics in the per-case table
ID_COLUMNS = ("case", "label")
FLAG_COLUMNS = ("empty_ref", "empty_pred")
#: decimals of a column that is not in the table
DEFAULT_DECIMALS = 2


def nsd_column(tolerance_mm: float) -> str:
    """Column name of the normalised surface Dice at ``tolerance_mm`` (``nsd_2mm``, ``nsd_1.5mm``)."""
    return f"nsd_{float(tolerance_mm):g}mm"


def metric_columns(nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM) -> list[str]:
    """The per-case table's columns, in order (``case`` and ``label`` first)."""
    return [*ID_COLUMNS, *(m.column(nsd_tolerance_mm) for m in METRICS), *FLAG_COLUMNS]


def metric_spec(column: str) -> Metric | None:
    """The table entry of a column (exact name, alias or pattern), None for anything else."""
    for m in METRICS:
        if m.matches(column):
            return m
    return None


def metric_direction(column: str) -> Direction | None:
    """``'higher'``, ``'lower'`` or ``'zero'`` (closest to 0 is best), None for non-scores."""
    spec = metric_spec(column)
    return spec.direction if spec else None


def metric_decimals(column: str) -> int:
    spec = metric_spec(column)
    return spec.decimals if spec else DEFAULT_DECIMALS


def scored_metrics(nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM) -> list[str]:
    """Columns with a direction: those an optimisation (choose-postprocessing) may target."""
    return [m.column(nsd_tolerance_mm) for m in METRICS if m.direction is not None]


def summary_metrics(summary: str = "mean", nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM) -> list[str]:
    """Columns summarised as ``summary`` (``'mean'``: mean/SD/median, ``'sum'``: counts)."""
    return [m.column(nsd_tolerance_mm) for m in METRICS if m.summary == summary]


def report_metrics() -> tuple[str, ...]:
    """Names (patterns kept: ``nsd_*``) analysed by default, in report order."""
    return tuple(m.name for m in METRICS if m.report)


def objective_values(column: str, values: "Iterable[float] | np.ndarray") -> "np.ndarray":
    """What an optimisation of ``column`` averages per case: the values, or ``|x|`` for 'zero'
    (closest to 0: an RVD of -0.5 is as bad as +0.5, so a mean of signed values would reward
    under- and over-segmentation that cancel)."""
    import numpy as np

    v = np.asarray(values, float)
    return np.abs(v) if _scored(column) == "zero" else v


def objective_sign(column: str) -> int:
    """+1 when a larger objective is better ('higher'), -1 when a smaller one is ('lower', 'zero')."""
    return 1 if _scored(column) == "higher" else -1


def objective_name(column: str) -> str:
    """``|rvd|`` for a closest-to-0 metric, the column itself otherwise."""
    return f"|{column}|" if _scored(column) == "zero" else column


def _scored(column: str) -> Direction:
    direction = metric_direction(column)
    if direction is None:
        raise ValueError(f"{column!r} has no better direction (not a score)")
    return direction


#: how each direction reads in captions and reports
DIRECTION_TEXT: dict[str, str] = {"higher": "higher is better", "lower": "lower is better",
                                  "zero": "closest to 0 is best"}


EMPTY_KINDS = (("both_empty", "both empty (ref and pred)"), ("ref_empty", "ref empty, pred not"),
               ("pred_empty", "ref not empty, pred empty"))


def empty_kind(ref_empty: bool, pred_empty: bool) -> str | None:
    """``'both_empty'``, ``'ref_empty'``, ``'pred_empty'`` or None (both masks non-empty)."""
    if ref_empty:
        return "both_empty" if pred_empty else "ref_empty"
    return "pred_empty" if pred_empty else None


def empty_values(kind: str, nsd_tolerance_mm: float, penalty: float) -> dict[str, float]:
    """Column -> value of every metric the table fixes for an empty ``kind`` (:data:`EMPTY_KINDS`);
    :data:`PENALTY` becomes ``penalty``, :data:`COMPUTED` metrics are left out."""
    out = {}
    for m in METRICS:
        value = getattr(m, kind)
        if value != COMPUTED:
            out[m.column(nsd_tolerance_mm)] = penalty if value == PENALTY else float(value)
    return out


#: where the empty-mask convention is written out; the analysis and demo reports link to it
EMPTY_POLICY_DOC = "docs/analysis-metrics.md, section 'Empty masks'"


def empty_rule(column: str) -> str:
    """The empty-mask convention of one metric in a sentence, for the reports (from :data:`METRICS`,
    so that the analysis report and the demo report cannot state different conventions)."""
    spec = metric_spec(column)
    if spec is None:
        raise ValueError(f"{column!r} is not a metric of the table")
    values = {kind: getattr(spec, kind) for kind, _ in EMPTY_KINDS}
    rules = [f"{_value_text(values[kind])} when {title}" for kind, title in EMPTY_KINDS if values[kind] != COMPUTED]
    finite = all(isinstance(v, float) and math.isfinite(v) for v in values.values() if v != COMPUTED)
    return (f"`{column}` is " + "; ".join(rules) + ("; so every case counts in the mean" if finite else "")
            + f" ({EMPTY_POLICY_DOC})")


def _value_text(value: EmptyValue) -> str:
    if value == PENALTY:
        return "image diagonal in mm (or NaN with empty_penalty='nan')"
    if isinstance(value, float) and math.isnan(value):
        return "NaN (undefined)"
    return f"{value:g}"


def empty_policy_text() -> str:
    """The empty-mask policy, one line per kind of case, written from :data:`METRICS`."""
    lines = []
    for kind, title in EMPTY_KINDS:
        groups: dict[str, list[str]] = {}
        for m in METRICS:
            value = getattr(m, kind)
            if value != COMPUTED:
                groups.setdefault(_value_text(value), []).append(m.label)
        parts = [" = ".join(names) + " = " + text for text, names in groups.items()]
        lines.append(f"{title:<27}: " + ", ".join(parts))
    lines.append("flags                      : empty_ref / empty_pred say which kind each row is; summaries count "
                 "each kind")
    lines.append("otherwise specificity, volumes and lesion counts are counted as usual; specificity is NaN only "
                 "when the reference fills the whole image.")
    return "\n".join(lines)


__all__ = ["Metric", "METRICS", "PENALTY", "COMPUTED", "ID_COLUMNS", "FLAG_COLUMNS", "nsd_column", "metric_columns",
           "metric_spec", "metric_direction", "metric_decimals", "scored_metrics", "summary_metrics",
           "report_metrics", "objective_values", "objective_sign", "objective_name", "DIRECTION_TEXT",
           "empty_policy_text", "EMPTY_KINDS", "empty_kind", "empty_values", "empty_rule", "EMPTY_POLICY_DOC"]
