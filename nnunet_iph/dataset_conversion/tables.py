"""Reading the converters' CSV tables (manifests, scan tables, slice tables) without silent guesses.

``csv.DictReader`` keeps the *last* of two columns with the same name and drops the values of a
row with more fields than the header; both would silently feed the wrong value into a dataset.
"""

from __future__ import annotations

from pathlib import Path


def unique_columns(header: list[str], path: Path, what: str) -> list[str]:
    """Stripped, lower-cased column names; a column named twice (case-insensitive) is refused."""
    lower = [c.strip().lower() for c in header]
    dup = sorted({c for c in lower if c and lower.count(c) > 1})
    if dup:
        raise ValueError(f"{what} {path}: duplicate column(s) {', '.join(dup)}; each column may appear only "
                         f"once (which one is meant cannot be told)")
    return lower


def field_count_problem(values: list[str], n_columns: int, path: Path, what: str, line: int) -> str | None:
    """The reason to skip a row whose field count differs from the header's (None if it matches)."""
    if len(values) == n_columns:
        return None
    return f"{what} {path} line {line}: has {len(values)} fields, header has {n_columns}"


def resolve_path(value: str | None, base: Path) -> str | None:
    """A path from a table cell: relative paths are relative to the table's folder; blank -> None."""
    v = (value or "").strip()
    if not v:
        return None
    p = Path(v).expanduser()
    return str(p if p.is_absolute() else base / p)
