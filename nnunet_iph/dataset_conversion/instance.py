"""INSTANCE 2022 challenge (intracranial hemorrhage, 100 labelled training scans).

Layout: ``data/NNN.nii.gz`` + ``label/NNN.nii.gz`` (512x512xN, ~0.42x0.42x5 mm, labels 0/1).
``SRC`` is either such a folder, or a folder whose subfolders are (e.g. ``train/`` with ``label/``
and ``validation/`` without): subfolders with ``label/`` are training data, those without are
unlabelled and go to ``imagesTs``, as do the folders given with ``test_dirs``. Inside a labelled
folder, an image without its label is a defect (reported), not an unlabelled case.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from nnunet_iph.dataset_conversion.core import ConversionOptions, Subject, run_conversion
from nnunet_iph.dataset_conversion.registry import Converter
from nnunet_iph.inference.model_inputs import InputSteps

IMAGE_DIRS = ("data", "image", "images")
LABEL_DIRS = ("label", "labels", "mask", "masks")
SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
SITE = "INSTANCE2022"
REFERENCE = ("Li X et al. The state-of-the-art 3D anisotropic intracranial hemorrhage segmentation on "
             "non-contrast head CT: The INSTANCE challenge. arXiv:2301.03281 (2023)")


def _stem(p: Path) -> str | None:
    low = p.name.lower()
    for s in SUFFIXES:
        if low.endswith(s) and not p.name.startswith("."):
            return p.name[: -len(s)]
    return None


def _sub(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_dir()), None)


def _images(folder: Path) -> dict[str, list[Path]]:
    """Image files by case stem; a stem with several files (``001.nii`` beside ``001.nii.gz``) keeps them all."""
    out: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and (st := _stem(p)) is not None:
            out.setdefault(st, []).append(p)
    return out


def _ambiguous(paths: list[Path] | None) -> str | None:
    """Which of two files of one case is meant cannot be told (one is likely a stale export)."""
    if paths and len(paths) > 1:
        return (f"{paths[0].parent}: {len(paths)} files for case {_stem(paths[0])} "
                f"({', '.join(p.name for p in paths)}); remove all but one")
    return None


def _sets(src: Path, test_dirs: list[Path]) -> list[tuple[Path, Path, Path | None]]:
    """(set folder, image folder, label folder or None) for each image set."""
    sets = []
    if _sub(src, IMAGE_DIRS):
        sets.append((src, _sub(src, IMAGE_DIRS), _sub(src, LABEL_DIRS)))
    else:
        for d in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if _sub(d, IMAGE_DIRS):
                sets.append((d, _sub(d, IMAGE_DIRS), _sub(d, LABEL_DIRS)))
    for t in test_dirs:
        if not t.is_dir():
            raise FileNotFoundError(f"test folder {t}: not found")
        sets.append((t, _sub(t, IMAGE_DIRS) or t, None))
    if not sets:
        raise FileNotFoundError(f"{src}: no data/ folder (expected INSTANCE 2022 layout data/NNN.nii.gz + "
                                f"label/NNN.nii.gz, or subfolders holding it)")
    return sets


def instance_subjects(src: str | os.PathLike, test_dirs: list[str | os.PathLike] = ()) -> list[Subject]:
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: folder not found")
    subjects: list[Subject] = []
    train_ids: set[str] = set()
    sets = _sets(src, [Path(t) for t in test_dirs])
    for set_dir, img_dir, lab_dir in sets:  # labelled sets first claim the plain ids
        if lab_dir is not None:
            labels = _images(lab_dir)
            images = _images(img_dir)
            for st, ps in images.items():
                lab = labels.get(st)
                subjects.append(Subject(subject_id=st, image=str(ps[0]),
                                        mask=str(lab[0] if lab else lab_dir / ps[0].name), split="train",
                                        site=SITE, meta={"source_set": set_dir.name},
                                        source_row=f"{img_dir.name}/{ps[0].name}",
                                        skip=_ambiguous(ps) or _ambiguous(lab)))
                train_ids.add(st)
            for st in sorted(set(labels) - set(images)):
                subjects.append(Subject(subject_id=st, image=None, mask=str(labels[st][0]), site=SITE,
                                        meta={"source_set": set_dir.name}, source_row=f"{lab_dir.name}/{st}",
                                        skip=f"label {labels[st][0]}: has no image in {img_dir}"))
    for set_dir, img_dir, lab_dir in sets:
        if lab_dir is None:
            for st, ps in _images(img_dir).items():
                sid = st if st not in train_ids else f"{set_dir.name}_{st}"
                subjects.append(Subject(subject_id=sid, image=str(ps[0]), mask=None, split="test", site=SITE,
                                        meta={"source_set": set_dir.name},
                                        source_row=f"{set_dir.name}/{ps[0].name}", skip=_ambiguous(ps)))
    return subjects


def convert_instance(src: str | os.PathLike, dataset_id: int, name: str,
                     raw_root: str | os.PathLike | None = None, *, test_dirs: list[str | os.PathLike] = (),
                     seed: int = 0, num_workers: int = 1, strict: bool = False, reorient: str | None = None,
                     num_folds: int = 5, split_scheme: str = "kfold", resample_mask: bool = False,
                     geometry_tolerance: float = 1e-3, merge_labels: bool = False,
                     dicom_irregular: str = "error", overwrite: bool = False, progress: bool = True,
                     input_steps: InputSteps | None = None) -> Path:
    """Convert INSTANCE 2022: labelled scans to imagesTr/labelsTr, unlabelled ones to imagesTs."""
    opts = ConversionOptions(reorient=reorient, geometry_tolerance=geometry_tolerance,
                             resample_mask=resample_mask, merge_labels=merge_labels,
                             dicom_irregular=dicom_irregular, input_steps=input_steps or InputSteps())
    return run_conversion(instance_subjects(src, list(test_dirs)), dataset_id=dataset_id, name=name,
                          raw_root=raw_root, converter="instance", source=src, options=opts, seed=seed,
                          num_workers=num_workers, strict=strict, num_folds=num_folds, split_scheme=split_scheme,
                          overwrite=overwrite, progress=progress, reference=REFERENCE,
                          description="INSTANCE 2022 intracranial hemorrhage segmentation challenge",
                          licence="see the INSTANCE 2022 data terms")


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", metavar="SRC", help="folder with data/ and label/ (or train/validation subfolders)")
    p.add_argument("--test-dir", action="append", default=[],
                   help="extra folder of unlabelled images (or with data/) for imagesTs; repeatable")


def _run(args: argparse.Namespace, common: dict) -> Path:
    return convert_instance(args.src, args.dataset_id, args.name, test_dirs=args.test_dir, **common)


CONVERTER = Converter("instance", "INSTANCE 2022: data/NNN.nii.gz + label/NNN.nii.gz", _add_arguments, _run)
