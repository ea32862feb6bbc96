"""What a model's inputs went through before nnU-Net saw them: skull stripping and CT channel copies.

A dataset converted with ``--brain-mask`` / ``--ct-channels N`` records the steps in its dataset.json
(``"nnunet_iph": {"brain_mask": {settings..., "fill": ...}, "ct_channels": N}``), and nnU-Net copies that
file into every model folder. The conversion (:mod:`nnunet_iph.dataset_conversion.case`), ``nnunet-iph
predict`` and ``nnunet-iph prepare-inputs`` all run :func:`skull_strip` and :func:`write_channels` from
here, so a CT reaches the network exactly as in training. Plain ``nnUNetv2_predict`` knows none of this:
on raw CTs it would segment unmasked scans (silently different from training) or miss the channel copies.

Why the fill defaults to the scan's minimum: outside the mask the CT then reads as air, the value nnU-Net
already sees around every head (and clips to its 0.5 percentile), so stripping adds no new intensity and
no edge that a window or the z-score would turn into an artefact.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from nnunet_iph.brain.settings import BrainMaskSettings

DATASET_KEY = "nnunet_iph"  # dataset.json block of the input steps
FILL_MINIMUM = "minimum"  # recorded fill: each scan's own minimum (air)
MAX_CT_CHANNELS = 16


@dataclass(frozen=True)
class InputSteps:
    """The steps between a CT file and the channel files nnU-Net reads."""

    brain_mask: BrainMaskSettings | None = None  # None: no skull stripping
    fill: float | None = None  # value outside the mask; None: the scan's minimum
    ct_channels: int = 1  # the CT written as channels _0000 .. _{N-1}

    @property
    def active(self) -> bool:
        return self.brain_mask is not None or self.ct_channels != 1

    def validate(self) -> None:
        if isinstance(self.ct_channels, bool) or not isinstance(self.ct_channels, int) \
                or not 1 <= self.ct_channels <= MAX_CT_CHANNELS:
            raise ValueError(f"ct_channels must be an integer in 1..{MAX_CT_CHANNELS}, got {self.ct_channels!r}")
        if self.fill is not None:
            if self.brain_mask is None:
                raise ValueError("a brain fill value (--brain-fill) needs brain masking (--brain-mask)")
            if not math.isfinite(self.fill):
                raise ValueError(f"brain fill must be a finite HU value, got {self.fill!r}")

    def record(self) -> dict[str, Any]:
        """The dataset.json block (empty when there is nothing to repeat at prediction)."""
        out: dict[str, Any] = {}
        if self.brain_mask is not None:
            out["brain_mask"] = {**asdict(self.brain_mask),
                                 "fill": FILL_MINIMUM if self.fill is None else float(self.fill)}
        if self.ct_channels != 1:
            out["ct_channels"] = self.ct_channels
        return out

    @classmethod
    def from_record(cls, block: Any, where: str) -> InputSteps:
        """Inverse of :meth:`record`; refuses what this version cannot repeat exactly."""
        if block is None:
            return cls()
        if not isinstance(block, dict) or set(block) - {"brain_mask", "ct_channels"}:
            raise ValueError(f"{where}: {DATASET_KEY!r} holds {block!r}; this nnunet-iph version knows "
                             f"'brain_mask' and 'ct_channels' only (upgrade nnunet-iph)")
        settings, fill = None, None
        if "brain_mask" in block:
            bm = dict(block["brain_mask"])
            fill_value = bm.pop("fill", FILL_MINIMUM)
            known = {f.name for f in fields(BrainMaskSettings)}
            if set(bm) != known:
                raise ValueError(f"{where}: brain_mask settings {sorted(bm)} differ from this nnunet-iph "
                                 f"version's {sorted(known)}; the extraction could not be repeated exactly")
            settings = BrainMaskSettings(**{k: float(v) for k, v in bm.items()})
            fill = None if fill_value == FILL_MINIMUM else float(fill_value)
        steps = cls(settings, fill, block.get("ct_channels", 1))
        try:
            steps.validate()
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        return steps


def steps_of_dataset(dataset_json: dict, where: str) -> InputSteps:
    """The steps a dataset.json records, checked against its channel names."""
    steps = InputSteps.from_record(dataset_json.get(DATASET_KEY), where)
    channels = dataset_json.get("channel_names", {})
    if steps.ct_channels != 1 and (len(channels) != steps.ct_channels
                                   or any(str(v).upper() != "CT" for v in channels.values())):
        raise ValueError(f"{where}: records ct_channels {steps.ct_channels} but channel_names {channels}")
    return steps


@dataclass
class StrippedCT:
    image: Any  # sitk.Image: the CT with fill outside the mask, or the input itself when passed through
    mask: Any  # sitk.Image uint8 on the CT's grid (all ones when passed through)
    passed_through: bool
    volume_ml: float | None
    fill: float | None  # the value used (None when passed through)
    warnings: list[str]


def skull_strip(image, settings: BrainMaskSettings, fill: float | None, case: str) -> StrippedCT:
    """``image`` with every voxel outside its intracranial mask set to ``fill`` (default: its minimum),
    pixel type kept. A passed-through mask (not head CT in HU, implausible volume) leaves the CT as it is,
    with the extraction's warning naming the case."""
    import numpy as np
    import SimpleITK as sitk

    from nnunet_iph.brain.extraction import intracranial_mask

    result = intracranial_mask(image, settings, case=case)
    if result.passed_through:
        return StrippedCT(image, result.mask, True, None, None, list(result.warnings))
    arr = sitk.GetArrayFromImage(image)
    value = float(arr.min()) if fill is None else float(fill)
    cast = np.asarray(value).astype(arr.dtype)
    if float(cast) != value:
        raise ValueError(f"{case}: brain fill {value:g} cannot be stored in the CT's pixel type {arr.dtype}")
    arr[sitk.GetArrayViewFromImage(result.mask) == 0] = cast
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(image)
    return StrippedCT(out, result.mask, False, result.volume_ml, value, list(result.warnings))


def channel_name(stem: str | os.PathLike, channel: int, file_ending: str) -> Path:
    return Path(f"{stem}_{channel:04d}{file_ending}")


def link_or_copy(src: Path, dest: Path) -> None:
    """``dest`` as a hard link of ``src`` (no extra disk space), a copy where the filesystem has none."""
    dest.unlink(missing_ok=True)
    try:
        os.link(src, dest)
    except OSError as err:
        if err.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        shutil.copyfile(src, dest)


def write_channels(image, stem: Path, n: int, file_ending: str, compress: bool = True) -> list[str]:
    """``image`` as ``stem_0000`` .. ``stem_{n-1}`` (channel 0 written, the others linked to it);
    channel 0 is (re)placed last so that a reader never sees a case without its copies."""
    import SimpleITK as sitk

    from nnunet_iph.imageio import atomic_path

    first = channel_name(stem, 0, file_ending)
    with atomic_path(first) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=compress)
        for c in range(1, n):
            link_or_copy(tmp, channel_name(stem, c, file_ending))
    return [str(channel_name(stem, c, file_ending)) for c in range(n)]


@dataclass
class PreparedCase:
    files: list[str]  # the channel files for nnU-Net
    passed_through: bool | None  # None: no skull stripping
    intracranial_ml: float | None
    warnings: list[str]

    def summary(self) -> dict[str, Any]:
        return {"passed_through": self.passed_through, "intracranial_ml": self.intracranial_ml,
                "warnings": self.warnings}


def prepare_case(case: str, ct_file: str, out_dir: Path, steps: InputSteps, file_ending: str,
                 compress: bool = True) -> PreparedCase:
    """One CT file -> the model's channel files under ``out_dir`` (read through the one reader)."""
    from nnunet_iph.imageio import read_image

    image = read_image(ct_file, "input image")
    passed, volume, warnings = None, None, []
    if steps.brain_mask is not None:
        stripped = skull_strip(image, steps.brain_mask, steps.fill, case)
        image, passed, volume, warnings = stripped.image, stripped.passed_through, stripped.volume_ml, stripped.warnings
    out_dir.mkdir(parents=True, exist_ok=True)
    files = write_channels(image, out_dir / case, steps.ct_channels, file_ending, compress)
    return PreparedCase(files, passed, volume, warnings)


def prepare_cases(cases: dict[str, list[str]], out_dir: Path, steps: InputSteps, file_ending: str,
                  compress: bool = True) -> tuple[dict[str, list[str]], dict[str, PreparedCase]]:
    """Every case's CT (its only file) -> the model's channel files; returns them and each case's summary."""
    prepared = {}
    for case, files in cases.items():
        if len(files) != 1:
            raise ValueError(f"case {case}: {len(files)} input files; a model trained on copies of one CT "
                             f"(dataset.json {DATASET_KEY}) takes one CT per case and makes the copies itself")
        prepared[case] = prepare_case(case, files[0], out_dir, steps, file_ending, compress)
    return {c: p.files for c, p in prepared.items()}, prepared


def model_steps(models) -> InputSteps:
    """The input steps shared by every model (ensemble members, cascade stages); refuses a mix."""
    found = {}
    for m in models:
        found[m.identifier] = steps_of_dataset(m.dataset_json(), str(m.folder / "dataset.json"))
    distinct = set(found.values())
    if len(distinct) > 1:
        raise ValueError(f"the models were trained on differently prepared inputs ({DATASET_KEY} in their "
                         f"dataset.json): " + "; ".join(f"{k}: {v.record() or 'none'}" for k, v in found.items()))
    return distinct.pop()


def prepare_input_folder(input_folder: str | os.PathLike, output_folder: str | os.PathLike,
                         model_folder: str | os.PathLike, dicom_irregular: str = "error",
                         series_uids: tuple[str, ...] = ()) -> tuple[dict[str, PreparedCase], InputSteps]:
    """``nnunet-iph prepare-inputs``: the CTs (files or DICOM case folders) of ``input_folder`` as the
    channel files that plain ``nnUNetv2_predict -i OUTPUT`` needs for the model in ``model_folder``.
    Refuses an output folder holding other image files (they would be segmented too)."""
    import tempfile

    from nnunet_iph.inference.predict import PredictSettings, Timing, gather_inputs

    ds_file = Path(model_folder) / "dataset.json"
    try:
        ds = json.loads(ds_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{ds_file}: not found; -m names a trained model's folder "
                                f"(nnUNet_results/DatasetNNN_NAME/TRAINER__PLANS__CONFIG)") from None
    except ValueError as err:
        raise ValueError(f"{ds_file}: not valid JSON ({err})") from None
    steps = steps_of_dataset(ds, str(ds_file))
    if not steps.active and len(ds.get("channel_names", {})) != 1:
        raise ValueError(f"{ds_file}: the model records no input steps and takes {len(ds['channel_names'])} "
                         f"channels: give nnUNetv2_predict the channel files as they are")
    out, ending = Path(output_folder), ds["file_ending"]
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a folder")
    if out.resolve() == Path(input_folder).resolve():
        raise ValueError(f"{out}: the output folder is the input folder; write the prepared files elsewhere")
    settings = PredictSettings(dicom_irregular=dicom_irregular, series_uids=tuple(series_uids))
    with tempfile.TemporaryDirectory(prefix="nnunet-iph-prepare-") as staging:
        cases, _ = gather_inputs(input_folder, ending, 1, Path(staging), settings, Timing(), out)
        expected = {channel_name(case, c, ending).name for case in cases for c in range(steps.ct_channels)}
        other = sorted(p.name for p in out.glob(f"*{ending}") if p.name not in expected) if out.is_dir() else []
        if other:
            raise ValueError(f"{out}: holds {len(other)} image file(s) of other cases ({', '.join(other[:3])}"
                             f"{' ...' if len(other) > 3 else ''}) that nnUNetv2_predict would segment too; "
                             f"use an empty output folder")
        _, prepared = prepare_cases(cases, out, steps, ending, compress=ending.endswith(".gz"))
    return prepared, steps
