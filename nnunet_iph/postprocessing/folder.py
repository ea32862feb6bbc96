"""Apply a post-processing configuration to a folder of predicted label images (atomic writes)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from nnunet_iph.postprocessing.brain import BrainSource
from nnunet_iph.postprocessing.operations import PostprocessingConfig, apply_postprocessing

CONFIG_FILE = "postprocessing.json"


def load_config(path: str | os.PathLike) -> PostprocessingConfig:
    """A configuration from JSON: a plain config, or the output of ``choose_postprocessing``
    (its ``chosen`` entry)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"post-processing config {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"post-processing config {path}: not readable JSON ({err})") from None
    if isinstance(data, dict) and "chosen" in data:
        data = data["chosen"]
    if isinstance(data, dict) and "config" in data and isinstance(data["config"], dict):
        data = data["config"]
    try:
        return PostprocessingConfig.from_dict(data)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: not a post-processing configuration ({err})") from None


def postprocess_file(src: Path, dst: Path, config: PostprocessingConfig, brain: BrainSource | None = None,
                     case: str | None = None) -> dict[str, Any]:
    """Post-process one label image into ``dst`` (same geometry). Read by
    :func:`nnunet_iph.imageio.read_image`: a truncated or corrupt file is refused, never rewritten as
    a valid one; so is an image that is no label map (a probability map). ``brain``: where the
    intracranial mask of ``case`` comes from (needed when ``config`` restricts to the brain)."""
    import SimpleITK as sitk

    from nnunet_iph.analysis.label_values import LabelValues, check_label_image
    from nnunet_iph.analysis.metrics import spacing_from_sitk
    from nnunet_iph.imageio import read_image, write_image

    image = read_image(src, "label image")
    check_label_image(image, src, "label image")
    arr = sitk.GetArrayFromImage(image)
    LabelValues().to_labels(arr, src, "label image")  # refuses non-label data; the voxel type is kept
    mask = None
    if config.restrict_to_brain:
        if brain is None:
            raise ValueError("the post-processing restricts to the brain: give the brain masks or the CT images")
        mask = brain.load(case or src.name, image, src)
    out = apply_postprocessing(arr, spacing_from_sitk(image), config, brain=None if mask is None else mask.inside)
    result = sitk.GetImageFromArray(out)
    result.CopyInformation(image)
    write_image(result, dst)
    row = {"case": src.name, "changed_voxels": int((out != arr).sum())}
    if mask is not None:
        row.update(mask.summary(int(((arr != 0) & ~mask.inside).sum())))
    return row


def _postprocess_job(job: tuple) -> dict[str, Any]:
    return postprocess_file(*job)


def postprocess_folder(in_dir: str | os.PathLike, out_dir: str | os.PathLike, config: PostprocessingConfig,
                       file_ending: str | None = None, num_workers: int = 1, progress: bool = True,
                       brain: BrainSource | None = None) -> list[dict[str, Any]]:
    """Post-process every label image of ``in_dir`` into ``out_dir`` (same names, same geometry)
    and store the configuration as ``out_dir/postprocessing.json``. ``brain``: the source of the
    intracranial masks when ``config`` restricts to the brain (checked before any image is read).

    All or nothing: images are written to a hidden folder inside ``out_dir`` and moved into place
    only when every one succeeded, so a bad input (named in the error) leaves ``out_dir`` as it was.
    """
    from nnunet_iph.analysis.evaluate import find_cases
    from nnunet_iph.analysis.output_paths import check_output_dir, reporting_write_errors
    from nnunet_iph.imageio import write_json
    from nnunet_iph.parallel import run_jobs

    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if config.restrict_to_brain and brain is None:
        raise ValueError("the post-processing restricts to the brain: give --brain-masks DIR or --images DIR")
    cases = find_cases(in_dir, file_ending)
    if not cases:
        raise ValueError(f"no label images in {in_dir}")
    check_output_dir(out_dir, "output folder")
    if out_dir.resolve() == in_dir.resolve():
        raise ValueError(f"output folder {out_dir} is the input folder; write to another folder")
    created = not out_dir.exists()
    with reporting_write_errors("post-processed images"):
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".postprocess-", dir=out_dir))
    try:
        jobs = [(path, staging / path.name, config, brain, case) for case, path in cases.items()]
        results = [r for _, r in run_jobs(_postprocess_job, jobs, num_workers, desc="postprocess",
                                          progress=progress)]
        with reporting_write_errors("post-processed images"):
            for path in cases.values():
                os.replace(staging / path.name, out_dir / path.name)
            write_json({"config": config.to_dict(), "description": config.describe(), "source": str(in_dir),
                        "brain_source": brain.describe() if brain is not None and config.restrict_to_brain
                        else None, "cases": results}, out_dir / CONFIG_FILE)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return results
