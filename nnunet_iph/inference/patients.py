"""Several scans per patient: volume trajectory and the hematoma-expansion flag (patients.csv).

The map is a CSV with a ``case`` column (the case names of volumes.csv), a ``patient`` column and
either ``time`` (numbers, e.g. hours from onset, or dates/times such as ``2024-03-01 14:30``) or
``order`` (numbers: 0 = baseline, 1 = first follow-up, ...); other columns (e.g. ``phase``, as the
MISTIE trials name their scans) are carried through. The baseline is each patient's earliest scan.

Expansion (the Davalos/Brott convention; Brott 1997 wrote "> 33 %", the 6 mL criterion is the one
combined with it e.g. in PREDICT, Demchuk 2012): a follow-up scan shows hematoma expansion when the
total hemorrhage volume grew from baseline by **>= 6 mL or >= 33 %** (both inclusive; growth rounded
to 1e-6 mL first). With a 0 mL baseline the
relative growth is undefined (left empty) and only the 6 mL criterion applies.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

EXPANSION_ML = 6.0
EXPANSION_FRACTION = 0.33
TIME_COLUMNS = ("time", "order")
PATIENT_COLUMNS = ("patient", "case", "scan", "hemorrhage_ml", "baseline_case", "baseline_ml", "growth_ml",
                   "growth_pct", "expansion", "patient_expansion")


def read_patient_map(path: str | os.PathLike) -> tuple[pd.DataFrame, str]:
    """The map (strings kept as written) and its time column; ``ValueError`` naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"patient map {path}: file not found")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"patient map {path}: not a readable CSV ({err})") from None
    table.columns = [c.strip() for c in table.columns]
    time_cols = [c for c in TIME_COLUMNS if c in table.columns]
    if "case" not in table.columns or "patient" not in table.columns or len(time_cols) != 1:
        raise ValueError(f"patient map {path}: needs the columns case, patient and one of time / order; "
                         f"it has {list(table.columns)}")
    key = time_cols[0]
    for col in ("case", "patient", key):
        table[col] = table[col].str.strip()
        empty = table.index[table[col] == ""]
        if len(empty):
            raise ValueError(f"patient map {path}: empty {col} in line {int(empty[0]) + 2}")
    dup = table["case"][table["case"].duplicated()]
    if len(dup):
        raise ValueError(f"patient map {path}: case {dup.iloc[0]} is listed twice")
    table["_sort"] = _sort_key(table[key], path, key)
    same = table[table.duplicated(["patient", "_sort"], keep=False)]
    if len(same):
        raise ValueError(f"patient map {path}: patient {same['patient'].iloc[0]} has two scans at the same {key} "
                         f"({', '.join(same['case'].head(2))}); the baseline would be ambiguous")
    return table, key


def _sort_key(values: pd.Series, path: Path, key: str) -> pd.Series:
    """Numbers, or else dates/times; a mix (or anything else) is an error naming the first bad value."""
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().all():
        return numbers.astype(float)
    if key == "order":
        bad = values[numbers.isna()].iloc[0]
        raise ValueError(f"patient map {path}: order {bad!r} is not a number")
    times = pd.to_datetime(values, errors="coerce", format="mixed")
    if times.isna().any() or numbers.notna().any():
        bad = values[times.isna() | numbers.notna()].iloc[0]
        raise ValueError(f"patient map {path}: time {bad!r} is neither a number nor a date/time like "
                         "2024-03-01 14:30 (use one kind for the whole column)")
    return times.astype("int64").astype(float)


def patients_table(volumes: pd.DataFrame, patient_map: pd.DataFrame, key: str,
                   source: str | os.PathLike = "patient map") -> tuple[pd.DataFrame, list[str]]:
    """One row per mapped scan, in patient and time order, and the cases of ``volumes`` not in the map.

    Every mapped case must have a volume (else ``ValueError``: a trajectory with a scan missing
    would silently move the baseline)."""
    missing = sorted(set(patient_map["case"]) - set(volumes["case"].astype(str)))
    if missing:
        raise ValueError(f"{source}: {len(missing)} mapped case(s) have no mask: {', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''}")
    unmapped = sorted(set(volumes["case"].astype(str)) - set(patient_map["case"]))
    vol = volumes.assign(case=volumes["case"].astype(str)).set_index("case")["hemorrhage_ml"]
    t = patient_map.assign(hemorrhage_ml=patient_map["case"].map(vol).astype(float))
    t = t.sort_values(["patient", "_sort"], kind="stable").reset_index(drop=True)
    t["scan"] = t.groupby("patient").cumcount()
    first = t.groupby("patient")[["case", "hemorrhage_ml"]].transform("first")
    t["baseline_case"], t["baseline_ml"] = first["case"], first["hemorrhage_ml"]
    t["growth_ml"] = (t["hemorrhage_ml"] - t["baseline_ml"]).round(6)
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = np.where(t["baseline_ml"] > 0, 100.0 * t["growth_ml"] / t["baseline_ml"], np.nan)
    t["growth_pct"] = np.round(pct, 3)
    grew = (t["growth_ml"] >= EXPANSION_ML) | (t["growth_pct"] >= 100 * EXPANSION_FRACTION)
    t["expansion"] = np.where(t["scan"] > 0, grew, None)
    t["patient_expansion"] = t.groupby("patient")["expansion"].transform(lambda s: bool(s.fillna(False).any()))
    extra = [c for c in patient_map.columns if c not in ("case", "patient", key, "_sort")]
    return t[["patient", "case", key, *extra, *PATIENT_COLUMNS[2:]]], unmapped
