"""The one reader of the TOML (or JSON) settings files: experiments, benchmark protocols.

Why one: both files are hand-written by users, so both must fail the same way - a one-line
``ValueError`` naming the file and the position of the syntax error - and agree on which
TOML parser runs (``tomllib`` from Python 3.11, the ``tomli`` backport before).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (tomli is a dependency there)
    import tomli as tomllib


def read_settings(path: str | os.PathLike, what: str = "settings file") -> dict[str, Any]:
    """Parse ``path`` (``.json``: JSON, anything else: TOML); ``what`` names the file in errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: invalid JSON: {err}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: invalid TOML: {err}") from None
