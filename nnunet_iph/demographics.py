"""Age and sex as the statistics need them: one spelling per sex, plausible ages only.

Manifests spell sex in many ways (``F``, ``female``, ``w``...); each spelling would otherwise become
its own level of the OLS ``sex`` term. Both the converters and ``analyze`` normalise through here,
so a dataset and its analysis agree. Values that cannot be interpreted are blanked (missing) with a
note naming the value, never guessed.
"""

from __future__ import annotations

import math
from typing import Any

#: every accepted spelling (case-insensitive, surrounding blanks ignored) -> the stored level
SEX_SPELLINGS: dict[str, str] = {
    "f": "F", "female": "F", "w": "F", "woman": "F", "girl": "F",
    "m": "M", "male": "M", "man": "M", "boy": "M",
}
#: spellings of "not recorded": blank without a note
MISSING_SPELLINGS = frozenset({"", "na", "n/a", "nan", "none", "null", "unknown", "?", "-"})
AGE_RANGE = (0.0, 120.0)  # years; outside: implausible -> blank


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return str(value).strip().lower() in MISSING_SPELLINGS


def normalize_sex(value: Any) -> tuple[str | None, str | None]:
    """``(level, note)``: level ``"F"``, ``"M"`` or None (missing); a note when a value was blanked."""
    if _is_missing(value):
        return None, None
    level = SEX_SPELLINGS.get(str(value).strip().lower())
    if level is None:
        return None, (f"sex {str(value)!r} not recognised (accepted: "
                      f"{', '.join(sorted(SEX_SPELLINGS))}) -> left blank")
    return level, None


def normalize_age(value: Any) -> tuple[float | None, str | None]:
    """``(years, note)``: a number within :data:`AGE_RANGE`, else None with a note saying why."""
    if _is_missing(value):
        return None, None
    try:
        age = float(str(value).strip())
    except ValueError:
        return None, f"age {str(value)!r} is not a number -> left blank"
    if not math.isfinite(age) or not AGE_RANGE[0] <= age <= AGE_RANGE[1]:
        return None, (f"age {str(value)!r} outside the plausible range "
                      f"{AGE_RANGE[0]:g}-{AGE_RANGE[1]:g} years -> left blank")
    return age, None


def describe_mapping() -> str:
    """The mapping in one line, for reports and --help."""
    groups: dict[str, list[str]] = {}
    for spelling, level in SEX_SPELLINGS.items():
        groups.setdefault(level, []).append(spelling)
    sexes = "; ".join(f"{'/'.join(v)} -> {k}" for k, v in sorted(groups.items()))
    return (f"sex (case-insensitive): {sexes}; other values left blank. "
            f"Age: numbers within {AGE_RANGE[0]:g}-{AGE_RANGE[1]:g} years, others left blank.")
