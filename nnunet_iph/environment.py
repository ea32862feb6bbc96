"""nnU-Net environment variables for our trainers: one place for the CLI and for API users.

nnU-Net finds ``-tr NAME`` by importing every module of the folders named in
``nnUNet_extTrainer`` (at train *and* predict time) and then dropping those modules from
``sys.modules``. That folder therefore holds only a shim that re-exports
:mod:`nnunet_iph.trainers`; the real classes stay importable (and picklable) from site-packages.
"""

from __future__ import annotations

import os
import platform
import shlex
from importlib import metadata
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


VERSION_PACKAGES = ("nnunet-iph", "nnunetv2", "torch", "numpy", "scipy", "pandas", "SimpleITK", "statsmodels",
                    "matplotlib", "dynamic_network_architectures", "batchgeneratorsv2")


def package_versions(packages: tuple[str, ...] = VERSION_PACKAGES) -> dict[str, str | None]:
    """Python and package versions for the records of a run (None: not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
