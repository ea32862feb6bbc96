"""Paper-style tables: rows = plane / configuration, columns = model, cells ``mean ± SD``.

This is the reference study's layout (one table per metric, best value of each row in bold),
written as Markdown, LaTeX and CSV. Means and SDs are over finite values only; cells that had
non-finite values (e.g. HD95 of an empty prediction) say so in a footnote, so nothing disappears
silently. "Best" is decided on the *displayed* (rounded) means, so ties that look equal are all bold.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from nnunet_iph.analysis.metric_table import DIRECTION_TEXT, metric_decimals, metric_direction
from nnunet_iph.imageio import write_csv, write_text

PM = "±"


@dataclass
class MetricTable:
    """Numbers behind one table; ``cells`` are the formatted strings, ``best`` the bold cells."""

    metric: str
    row_col: str
    col_col: str
    mean: pd.DataFrame
    sd: pd.DataFrame
    n: pd.DataFrame
    n_nonfinite: pd.DataFrame
    cells: pd.DataFrame
    best: pd.DataFrame
    direction: str | None
    decimals: int
    notes: list[str] = field(default_factory=list)


def _order(values: pd.Series) -> list:
    return list(dict.fromkeys(values.tolist()))


def default_decimals(metric: str) -> int:
    """Decimals of the metric table (overlap scores 3, distances / volumes 2)."""
    return metric_decimals(metric)


def build_table(df: pd.DataFrame, metric: str, row_col: str = "row", col_col: str = "model",
                decimals: int | None = None, direction: str | None = "auto") -> MetricTable:
    """Aggregate ``metric`` into the rows x models layout and mark the best cell per row.

    ``direction``: 'higher', 'lower', 'zero' (closest to 0), None (no bold) or 'auto' (from the
    metric name). A row with fewer than two filled cells gets no bold.
    """
    for col in (row_col, col_col, metric):
        if col not in df.columns:
            raise ValueError(f"table for '{metric}': column '{col}' not in the per-case table")
    if direction == "auto":
        direction = metric_direction(metric)
    decimals = default_decimals(metric) if decimals is None else decimals
    rows, cols = _order(df[row_col].astype(str)), _order(df[col_col].astype(str))
    values = pd.to_numeric(df[metric], errors="coerce").astype(float)
    frame = pd.DataFrame({"r": df[row_col].astype(str).to_numpy(), "c": df[col_col].astype(str).to_numpy(),
                          "v": values.to_numpy()})
    frame["finite"] = np.isfinite(frame["v"])
    fin = frame[frame["finite"]]
    grid = lambda s: s.unstack("c").reindex(index=rows, columns=cols)  # noqa: E731
    mean = grid(fin.groupby(["r", "c"])["v"].mean())
    sd = grid(fin.groupby(["r", "c"])["v"].std(ddof=1))
    n = grid(fin.groupby(["r", "c"])["v"].size()).fillna(0).astype(int)
    n_bad = grid(frame.groupby(["r", "c"])["finite"].apply(lambda f: int((~f).sum()))).fillna(0).astype(int)
    rounded = mean.round(decimals)
    best = pd.DataFrame(False, index=rows, columns=cols)
    if direction is not None:
        for r in rows:
            vals = rounded.loc[r].dropna()
            if len(vals) < 2:
                continue
            key = vals.abs() if direction == "zero" else vals
            target = key.max() if direction == "higher" else key.min()
            best.loc[r, key.index[np.isclose(key.to_numpy(), target, rtol=0, atol=0.5 * 10 ** -decimals)]] = True
    cells = pd.DataFrame("–", index=rows, columns=cols, dtype=object)
    for r in rows:
        for c in cols:
            m, s = mean.loc[r, c], sd.loc[r, c]
            if np.isfinite(m):
                cells.loc[r, c] = f"{m:.{decimals}f} {PM} {s:.{decimals}f}" if np.isfinite(s) else f"{m:.{decimals}f}"
    notes = []
    for r in rows:
        for c in cols:
            if n_bad.loc[r, c]:
                notes.append(f"{c} / {r}: {n_bad.loc[r, c]} non-finite value(s) excluded from mean ± SD "
                             f"(n = {n.loc[r, c]} used)")
    counts = set(n.to_numpy().ravel().tolist()) - {0}
    if len(counts) > 1:
        notes.append("cases per cell differ: " + ", ".join(f"{c} / {r}: n = {n.loc[r, c]}"
                                                           for r in rows for c in cols if n.loc[r, c]))
    return MetricTable(metric, row_col, col_col, mean, sd, n, n_bad, cells, best, direction, decimals, notes)


def _caption(t: MetricTable) -> str:
    n = sorted(set(t.n.to_numpy().ravel().tolist()) - {0})
    n_txt = f"n = {n[0]} cases per cell" if len(n) == 1 else "n varies per cell"
    best = f"; best per row in bold ({DIRECTION_TEXT[t.direction]})" if t.direction and t.best.to_numpy().any() else ""
    return f"{t.metric}: mean {PM} SD, {n_txt}{best}."


def to_markdown(t: MetricTable, caption: str | None = None) -> str:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    header = [esc(t.row_col)] + [esc(c) for c in t.cells.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + [":---:"] * len(t.cells.columns)) + "|"]
    for r in t.cells.index:
        cells = [f"**{t.cells.loc[r, c]}**" if t.best.loc[r, c] else t.cells.loc[r, c] for c in t.cells.columns]
        lines.append("| " + " | ".join([esc(r)] + cells) + " |")
    out = "\n".join(lines) + "\n\n" + (caption or _caption(t)) + "\n"
    if t.notes:
        out += "".join(f"\n- {n}" for n in t.notes) + "\n"
    return out


def latex_escape(text: str) -> str:
    repl = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
            PM: r"$\pm$", "–": "--"}
    return "".join(repl.get(ch, ch) for ch in str(text))


def to_latex(t: MetricTable, caption: str | None = None, label: str | None = None) -> str:
    """A ``table`` environment with booktabs rules (needs ``\\usepackage{booktabs}``)."""
    cols = list(t.cells.columns)
    lines = [r"\begin{table}[ht]", r"\centering",
             rf"\caption{{{latex_escape(caption or _caption(t))}}}"]
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [r"\begin{tabular}{l" + "c" * len(cols) + "}", r"\toprule",
              " & ".join([latex_escape(t.row_col)] + [latex_escape(c) for c in cols]) + r" \\", r"\midrule"]
    for r in t.cells.index:
        cells = []
        for c in cols:
            cell = t.cells.loc[r, c].replace(PM, r"$\pm$").replace("–", "--")
            cells.append(rf"\textbf{{{cell}}}" if t.best.loc[r, c] else cell)
        lines.append(" & ".join([latex_escape(r)] + cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    for note in t.notes:
        lines.append(r"\par\footnotesize " + latex_escape(note))
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def to_long(t: MetricTable) -> pd.DataFrame:
    """Tidy CSV form: one line per cell with the numbers, the formatted cell and the bold flag."""
    rows = []
    for r in t.cells.index:
        for c in t.cells.columns:
            rows.append({t.row_col: r, t.col_col: c, "metric": t.metric, "n": int(t.n.loc[r, c]),
                         "n_nonfinite": int(t.n_nonfinite.loc[r, c]), "mean": t.mean.loc[r, c],
                         "sd": t.sd.loc[r, c], "cell": t.cells.loc[r, c], "best": bool(t.best.loc[r, c])})
    return pd.DataFrame(rows)


def write_table(t: MetricTable, out_dir: str | os.PathLike, stem: str | None = None) -> dict[str, Path]:
    """Write ``<stem>.md``, ``<stem>.tex`` and ``<stem>.csv``; returns the paths by format."""
    out_dir = Path(out_dir)
    stem = stem or f"table_{t.metric}"
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem)
    return {"md": write_text(to_markdown(t), out_dir / f"{safe}.md"),
            "tex": write_text(to_latex(t, label=f"tab:{safe}"), out_dir / f"{safe}.tex"),
            "csv": write_csv(to_long(t), out_dir / f"{safe}.csv")}
