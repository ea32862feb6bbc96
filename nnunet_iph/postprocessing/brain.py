"""Where the intracranial mask of a case comes from when post-processing restricts to the brain.

Either a folder of masks (``nnunet-iph brain-mask`` output, ``OUT/brain`` of ``predict
--brain-mask``: ``<case><file_ending>``) or the CT images, from which
:func:`nnunet_iph.brain.extraction.intracranial_mask` computes it. The source is not part of a
post-processing configuration: the configuration says *what* to do and is chosen on
cross-validation cases, the masks belong to the cases it is applied to, so they are named at apply
time. A mask must lie on the prediction's grid (no resampling: a mask of another scan must not be
used silently); an all-ones mask (the extraction passed the scan through) restricts nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np


@dataclass(frozen=True)
class BrainMask:
    inside: np.ndarray  # bool, on the prediction's array grid
    source: str  # the mask file, or "computed from <CT>"
    passed_through: bool  # all ones: nothing is restricted

    def summary(self, removed_voxels: int) -> dict[str, Any]:
        """The per-case record of what the restriction did."""
        if self.passed_through:
            note = "passed through (all-ones brain mask): not restricted"
        else:
            note = f"removed {removed_voxels} voxel(s) outside the intracranial mask"
        return {"brain_mask": self.source, "brain_passed_through": self.passed_through,
                "removed_outside_brain": removed_voxels, "brain_note": note}


@dataclass(frozen=True)
class BrainSource:
    """``masks``: folder of ``<case><file_ending>`` masks; ``images``: folder of CTs (nnU-Net
    ``CASE_0000`` naming or plain) to compute them from. Exactly one of the two. ``file_ending``
    of the masks; None: any image ending (one file per case)."""
    masks: Path | None = None
    images: Path | None = None
    file_ending: str | None = None

    def __post_init__(self):
        if (self.masks is None) == (self.images is None):
            raise ValueError("restricting to the brain needs brain masks or CT images (give exactly one)")
        folder = self.masks if self.masks is not None else self.images
        if not Path(folder).is_dir():
            what = "brain-mask" if self.masks is not None else "CT image"
            raise FileNotFoundError(f"{folder}: {what} folder not found")

    @classmethod
    def from_options(cls, masks: str | os.PathLike | None, images: str | os.PathLike | None,
                     file_ending: str | None = None) -> "BrainSource | None":
        """The source of ``--brain-masks`` / ``--images`` (None when neither is given)."""
        if masks is None and images is None:
            return None
        if masks is not None and images is not None:
            raise ValueError("give --brain-masks or --images, not both")
        return cls(Path(masks) if masks is not None else None, Path(images) if images is not None else None,
                   file_ending)

    def describe(self) -> str:
        return f"brain masks {self.masks}" if self.masks is not None else f"computed from the CTs in {self.images}"

    def _mask_file(self, case: str) -> Path:
        from nnunet_iph.brain.folder import CT_ENDINGS

        endings = (self.file_ending,) if self.file_ending else CT_ENDINGS
        found = [self.masks / f"{case}{e}" for e in endings if (self.masks / f"{case}{e}").is_file()]
        if not found:
            raise FileNotFoundError(f"case {case}: no brain mask {case}{'|'.join(endings)} in {self.masks}")
        if len(found) > 1:
            raise ValueError(f"case {case}: several brain masks in {self.masks} ({', '.join(p.name for p in found)})")
        return found[0]

    def _ct_file(self, case: str) -> Path:
        """``CASE_0000<ending>`` (nnU-Net naming, channel 0) or ``CASE<ending>``, as ``brain-mask`` reads them."""
        from nnunet_iph.brain.folder import CT_ENDINGS

        found = [p for e in CT_ENDINGS for p in (self.images / f"{case}_0000{e}", self.images / f"{case}{e}")
                 if p.is_file()]
        if not found:
            raise FileNotFoundError(f"case {case}: no CT image ({case}_0000 or {case} with one of "
                                    f"{', '.join(CT_ENDINGS)}) in {self.images}")
        if len(found) > 1:
            raise ValueError(f"case {case}: several CT images in {self.images} ({', '.join(p.name for p in found)})")
        return found[0]

    def load(self, case: str, prediction, prediction_path: str | os.PathLike) -> BrainMask:
        """The mask of ``case`` for the SimpleITK image ``prediction`` (read from ``prediction_path``);
        refused, naming both files, when it lies on another grid."""
        import SimpleITK as sitk

        from nnunet_iph.imageio import InputError, read_image
        from nnunet_iph.inference.volumes import check_label_map, same_grid

        if self.masks is not None:
            path = self._mask_file(case)
            image = read_image(path, "brain mask")
            inside = check_label_map(image, path, "brain mask") != 0
            source, what = str(path), f"brain mask {path}"
            passed = bool(inside.all())
        else:
            from nnunet_iph.brain.extraction import intracranial_mask

            path = self._ct_file(case)
            result = intracranial_mask(read_image(path, "CT"), case=case)
            image = result.mask
            inside = sitk.GetArrayFromImage(image) != 0
            source, what = f"computed from {path}", f"CT {path} (its brain mask)"
            passed = result.passed_through
        problems = same_grid(prediction, image)
        if problems:
            raise InputError(f"{what}: not on the grid of the prediction {prediction_path}: " + "; ".join(problems))
        return BrainMask(inside, source, passed)


def restrict_folder_in_place(folder: str | os.PathLike, cases: Iterable[str], file_ending: str,
                             masks: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Restrict every ``folder/<case><file_ending>`` to ``masks/<case><file_ending>`` (``predict
    --restrict-to-brain``); the per-case summary. Every case is checked and restricted in memory
    before the first file is rewritten, so a bad mask leaves all predictions as they were."""
    import SimpleITK as sitk

    from nnunet_iph.imageio import read_image, write_image
    from nnunet_iph.inference.volumes import check_label_map
    from nnunet_iph.postprocessing.operations import restrict_to_brain

    source = BrainSource(masks=Path(masks), file_ending=file_ending)
    summary, changed = {}, []
    for case in cases:
        path = Path(folder) / f"{case}{file_ending}"
        image = read_image(path, "prediction")
        arr = check_label_map(image, path, "prediction")
        mask = source.load(case, image, path)
        removed = int(((arr != 0) & ~mask.inside).sum())
        if removed:
            restricted = sitk.GetImageFromArray(restrict_to_brain(arr, mask.inside))
            restricted.CopyInformation(image)
            changed.append((restricted, path))
        summary[case] = mask.summary(removed)
    for restricted, path in changed:
        write_image(restricted, path)
    return summary


__all__ = ["BrainMask", "BrainSource", "restrict_folder_in_place"]
