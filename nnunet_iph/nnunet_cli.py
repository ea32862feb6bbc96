"""Run nnU-Net's own console scripts (the real entry points), logging their output to a file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def console_script(name: str) -> str:
    """Path of an installed console script: next to this interpreter first (venv), then PATH."""
    local = Path(sys.executable).parent / name
    if local.is_file():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"console script {name!r} not found; is nnunetv2 installed in this environment?")
    return found


def run_logged(args: list[str], log_file: Path, env: dict[str, str] | None = None) -> None:
    """Run ``args[0]`` (a console script name) with the rest as arguments; raise with the log's tail."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    cmd = [console_script(args[0]), *args[1:]]
    with open(log_file, "w", encoding="utf-8") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        tail = "".join(log_file.read_text(encoding="utf-8").splitlines(keepends=True)[-30:])
        raise RuntimeError(f"{args[0]} failed with exit code {proc.returncode} (log: {log_file}):\n{tail}")
