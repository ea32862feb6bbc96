"""index.html of an output folder: the volume table, the patients' trajectories and every QC picture.

One self-contained file: inline CSS, no script, no external resource; pictures and CSV files are
linked by relative URLs, so the folder can be moved, zipped or opened from a file share.
"""

from __future__ import annotations

import html
from typing import Mapping, Sequence
from urllib.parse import quote

import pandas as pd

SHOWN_COLUMNS = (("case", "case"), ("hemorrhage_ml", "hemorrhage mL"), ("n_lesions", "lesions"),
                 ("largest_lesion_ml", "largest mL"), ("abc2_ml", "ABC/2 mL"), ("abc2_a_mm", "A mm"),
                 ("abc2_b_mm", "B mm"), ("abc2_c_mm", "C mm"), ("intracranial_ml", "intracranial mL"))

_CSS = """body{font-family:sans-serif;margin:1.5em;color:#111;background:#fff}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #bbb;padding:2px 8px;text-align:right}
th{background:#eee}td:first-child{text-align:left}tr.expansion td{background:#fdd}
figure{margin:1.5em 0}figure img{max-width:100%;border:1px solid #999}figcaption{font-weight:bold}"""


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.2f}"
    return html.escape(str(value))


def _table(frame: pd.DataFrame, columns: Sequence[tuple[str, str]], link_cases: bool,
           highlight: str | None = None) -> str:
    cols = [(c, label) for c, label in columns if c in frame.columns]
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in cols)
    rows = []
    for rec in frame.to_dict("records"):
        cells = []
        for c, _ in cols:
            text = _cell(rec[c])
            if c == "case" and link_cases:
                text = f'<a href="#{quote("case-" + str(rec[c]))}">{text}</a>'
            cells.append(f"<td>{text}</td>")
        cls = ' class="expansion"' if highlight and rec.get(highlight) is True else ""
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def index_html(volumes: pd.DataFrame, pictures: Mapping[str, str], links: Mapping[str, str], title: str,
               patients: pd.DataFrame | None = None) -> str:
    """The page. ``pictures``: case -> relative path of its QC picture; ``links``: label -> relative path."""
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
             f"</title><style>{_CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    if links:
        parts.append("<p>" + " | ".join(f'<a href="{quote(path)}">{html.escape(label)}</a>'
                                        for label, path in links.items()) + "</p>")
    parts.append(_table(volumes, SHOWN_COLUMNS, link_cases=bool(pictures)))
    if patients is not None:
        key = next(c for c in ("time", "order") if c in patients.columns)
        cols = [("patient", "patient"), ("case", "case"), (key, key), ("hemorrhage_ml", "hemorrhage mL"),
                ("growth_ml", "growth mL"), ("growth_pct", "growth %"), ("expansion", "expansion")]
        parts += ["<h2>Patients (expansion: growth &ge; 6 mL or &ge; 33 % from baseline)</h2>",
                  _table(patients, cols, link_cases=bool(pictures), highlight="expansion")]
    for case, path in pictures.items():
        name = html.escape(str(case))
        parts.append(f'<figure id="{html.escape("case-" + str(case))}"><figcaption>{name}</figcaption>'
                     f'<img src="{quote(path)}" alt="QC picture of {name}" loading="lazy"></figure>')
    parts.append("</body></html>\n")
    return "\n".join(parts)
