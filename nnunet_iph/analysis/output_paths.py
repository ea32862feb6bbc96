"""Checks of output paths before any work starts, and OS errors of writing as one-line messages.

A command that computes for minutes and then fails on ``-o some_folder/`` or a read-only folder
wastes the run and, when it writes several files, leaves some of them behind; so every output is
checked up front (is it a folder where a file is wanted, or the reverse; can the first existing
folder on its way be written to), and what still goes wrong while writing is reported naming the
file, never as a traceback.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


def _existing_ancestor(path: Path, what: str) -> Path:
    """The nearest existing folder on the way to ``path``; a file on that way is an error."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{what} {path}: {parent} is a file, not a folder")
            return parent
    return Path.cwd()  # pragma: no cover - the root always exists


def _check_writable(folder: Path, what: str, path: Path) -> None:
    """Create and remove a probe file: the only test that also holds for root, ACLs and read-only mounts."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".iph-write-test-", dir=folder)
    except OSError as err:
        raise ValueError(f"{what} {path}: cannot write to {folder} ({err.strerror or err})") from None
    os.close(fd)
    os.unlink(probe)


def check_output_file(path: str | os.PathLike, what: str) -> Path:
    """Refuse an output file that is a folder, lies below a file or in a folder that cannot be written."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{what} {p}: is a folder; give a file name (e.g. {p / 'metrics.csv'})")
    folder = p.parent if p.parent.exists() else _existing_ancestor(p, what)
    if not folder.is_dir():
        raise ValueError(f"{what} {p}: {folder} is a file, not a folder")
    _check_writable(folder, what, p)
    return p


def check_output_dir(path: str | os.PathLike, what: str) -> Path:
    """Refuse an output folder that is a file, lies below a file or cannot be written."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{what} {p}: is a file, expected a folder")
    _check_writable(p if p.is_dir() else _existing_ancestor(p, what), what, p)
    return p


@contextlib.contextmanager
def reporting_write_errors(what: str) -> Iterator[None]:
    """Turn an OS error while writing (disk full, permissions changed meanwhile) into a ValueError."""
    try:
        yield
    except OSError as err:
        name = f" {err.filename}" if err.filename else ""
        raise ValueError(f"cannot write {what}{name}: {err.strerror or err}") from None


__all__ = ["check_output_file", "check_output_dir", "reporting_write_errors"]
