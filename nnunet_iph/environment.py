"""nnU-Net environment variables for our trainers: one place for the CLI and for API users.

nnU-Net finds ``-tr NAME`` by importing every module of the folders named in
``nnUNet_extTrainer`` (at train *and* predict time) and then dropping those modules from
``sys.modules``. That folder therefore holds only a shim that re-exports
:mod:`nnunet_iph.trainers`; the real classes stay importable (and picklable) from site-packages.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

EXT_TRAINER_DIR = Path(__file__).resolve().parent / "nnunet_ext"
RESULT_DIRS = {"nnUNet_raw": "nnUNet_raw", "nnUNet_preprocessed": "nnUNet_preprocessed",
               "nnUNet_results": "nnUNet_results"}


def nnunet_env(workdir: str | os.PathLike | None = None, create: bool = True) -> dict[str, str]:
    """Variables nnU-Net needs to find our trainers and (with ``workdir``) its data folders.

    An ``nnUNet_extTrainer`` already set by the user is kept after ours, so other plugins still load.
    """
    existing = [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep)
                if p and Path(p).resolve() != EXT_TRAINER_DIR]
    env = {"nnUNet_extTrainer": os.pathsep.join([str(EXT_TRAINER_DIR), *existing])}
    if workdir is not None:
        root = Path(workdir).resolve()
        for var, sub in RESULT_DIRS.items():
            path = root / sub
            if create:
                path.mkdir(parents=True, exist_ok=True)
            env[var] = str(path)
    return env


def apply_nnunet_env(workdir: str | os.PathLike | None = None) -> dict[str, str]:
    """Set :func:`nnunet_env` in ``os.environ`` (before importing nnunetv2, which reads the paths once)."""
    env = nnunet_env(workdir)
    os.environ.update(env)
    return env


def export_lines(env: dict[str, str]) -> str:
    """Shell ``export`` lines, quoted so that ``eval "$(nnunet-iph env ...)"`` is safe."""
    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items())
