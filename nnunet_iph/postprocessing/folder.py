"""Apply a post-processing configuration to a folder of predicted label images (atomic writes)."""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from nnunet_iph.postprocessing.operations import PostprocessingConfig, apply_postprocessing

CONFIG_FILE = "postprocessing.json"


def load_config(path: str | os.PathLike) -> PostprocessingConfig:
    """A configuration from JSON: a plain config, or the output of ``choose_postprocessing``
    (its ``chosen`` entry)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"post-processing config {path} does not exist")
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict) and "chosen" in data:
        data = data["chosen"]
    if isinstance(data, dict) and "config" in data and isinstance(data["config"], dict):
        data = data["config"]
    try:
        return PostprocessingConfig.from_dict(data)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: not a post-processing configuration ({err})") from None


def postprocess_file(src: Path, dst: Path, config: PostprocessingConfig) -> dict[str, Any]:
    import SimpleITK as sitk

    from nnunet_iph.analysis.metrics import spacing_from_sitk
    from nnunet_iph.imageio import write_image

    image = sitk.ReadImage(str(src))
    arr = sitk.GetArrayFromImage(image)
    out = apply_postprocessing(arr, spacing_from_sitk(image), config)
    result = sitk.GetImageFromArray(out)
    result.CopyInformation(image)
    write_image(result, dst)
    return {"case": src.name, "changed_voxels": int((out != arr).sum())}


def _star(args):
    return postprocess_file(*args)


def postprocess_folder(in_dir: str | os.PathLike, out_dir: str | os.PathLike, config: PostprocessingConfig,
                       file_ending: str | None = None, num_workers: int = 1, progress: bool = True
                       ) -> list[dict[str, Any]]:
    """Post-process every label image of ``in_dir`` into ``out_dir`` (same names, same geometry)
    and store the configuration as ``out_dir/postprocessing.json``."""
    from nnunet_iph.analysis.evaluate import _progress, find_cases
    from nnunet_iph.imageio import write_json

    in_dir, out_dir = Path(in_dir), Path(out_dir)
    cases = find_cases(in_dir, file_ending)
    if not cases:
        raise ValueError(f"no label images in {in_dir}")
    if out_dir.resolve() == in_dir.resolve():
        raise ValueError(f"output folder {out_dir} is the input folder; write to another folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(path, out_dir / path.name, config) for path in cases.values()]
    results = []
    bar = _progress(len(jobs), progress, "postprocess")
    try:
        if num_workers > 1 and len(jobs) > 1:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=min(num_workers, len(jobs)), mp_context=ctx) as pool:
                for r in pool.map(_star, jobs, chunksize=1):
                    results.append(r)
                    bar.update(1)
        else:
            for job in jobs:
                results.append(_star(job))
                bar.update(1)
    finally:
        bar.close()
    write_json({"config": config.to_dict(), "description": config.describe(), "source": str(in_dir),
                "cases": results}, out_dir / CONFIG_FILE)
    return results
