"""``nnunet-iph convert SOURCE``: sources -> nnU-Net raw data, one subcommand per registered converter
(:mod:`nnunet_iph.dataset_conversion.registry`), plus ``install-splits``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nnunet_iph.brain.settings import BrainMaskSettings


def _common(p: argparse.ArgumentParser) -> None:
    """The options every converter shares (defined once; see :func:`_common_kwargs`)."""
    p.add_argument("--dataset-id", "-d", type=int, required=True, help="nnU-Net dataset id (1-999)")
    p.add_argument("--name", required=True, help="dataset name: the folder is DatasetNNN_NAME")
    p.add_argument("--raw-root", help="output root (default: $nnUNet_raw)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--strict", action="store_true", help="fail (writing nothing) instead of skipping bad inputs")
    p.add_argument("--reorient", metavar="CODE",
                   help="reorient image and mask to this orientation (DICOM convention, e.g. LPS or RAS)")
    p.add_argument("--resample-mask", action="store_true",
                   help="resample masks whose grid differs from the image beyond the tolerance "
                        "(nearest neighbour) instead of skipping the case")
    p.add_argument("--tolerance", type=float, default=1e-3,
                   help="image/mask geometry tolerance in mm and direction cosines (default 1e-3)")
    p.add_argument("--merge-labels", action="store_true", help="map every positive mask label to 1")
    p.add_argument("--dicom-irregular", choices=("error", "keep", "resample"), default="error",
                   help="DICOM series with gantry tilt or non-uniform slice spacing: skip with a reason "
                        "(error, default), convert as read (keep), or resample to a regular grid")
    p.add_argument("--folds", type=int, default=5, help="number of patient-level folds (default 5)")
    p.add_argument("--split-scheme", choices=("kfold", "loso"), default="kfold",
                   help="what splits_final.json holds: k folds stratified by site and size, or "
                        "leave-one-site-out (both are written as splits_kfold/splits_loso.json)")
    p.add_argument("--seed", type=int, default=0, help="seed of the test hold-out and folds")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing dataset folder that was not written by nnunet-iph or holds "
                        "the conversion of another source")
    p.add_argument("--install-splits", action="store_true",
                   help="also copy splits_final.json to $nnUNet_preprocessed/DatasetNNN_NAME/")
    p.add_argument("--brain-mask", action="store_true",
                   help="skull-strip every CT: voxels outside its intracranial mask (nnunet-iph brain-mask) set to "
                        "--brain-fill; masks kept in DatasetNNN_NAME/brainmasks/; recorded in dataset.json so that "
                        "nnunet-iph predict / prepare-inputs do the same (see docs/dataset-conversion.md)")
    p.add_argument("--brain-fill", type=float, metavar="HU",
                   help="with --brain-mask: value outside the mask (default: each scan's minimum, i.e. air)")
    p.add_argument("--brain-min-volume-ml", type=float, metavar="ML",
                   help="with --brain-mask: smaller masks are implausible -> CT left unmasked with a warning "
                        f"(default {BrainMaskSettings().min_volume_ml:g}; lower it for infants)")
    p.add_argument("--ct-channels", type=int, default=1, metavar="N",
                   help="write each CT as N identical channels _0000.._000{N-1} (hard links where possible), e.g. "
                        "for a multi-window intensity protocol (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _input_steps(args: argparse.Namespace):
    from dataclasses import replace

    from nnunet_iph.inference.model_inputs import InputSteps

    if not args.brain_mask and (args.brain_fill is not None or args.brain_min_volume_ml is not None):
        raise ValueError("--brain-fill / --brain-min-volume-ml need --brain-mask")
    settings = None
    if args.brain_mask:
        settings = BrainMaskSettings()
        if args.brain_min_volume_ml is not None:
            settings = replace(settings, min_volume_ml=args.brain_min_volume_ml)
    return InputSteps(settings, args.brain_fill, args.ct_channels)


def _common_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The shared options as keyword arguments of every ``convert_*`` function."""
    return dict(raw_root=args.raw_root, num_workers=args.workers, strict=args.strict, reorient=args.reorient,
                num_folds=args.folds, split_scheme=args.split_scheme, resample_mask=args.resample_mask,
                geometry_tolerance=args.tolerance, merge_labels=args.merge_labels,
                dicom_irregular=args.dicom_irregular, seed=args.seed, overwrite=args.overwrite,
                progress=not args.no_progress, input_steps=_input_steps(args))


def register(sub: argparse._SubParsersAction) -> None:
    from nnunet_iph.dataset_conversion.registry import converters
    from nnunet_iph.demographics import describe_mapping

    p = sub.add_parser("convert", help="convert a data source into an nnU-Net raw dataset",
                       description="Convert a data source into nnUNet_raw/DatasetNNN_NAME with dataset.json, "
                                   "cases.csv, conversion_report.csv and splits_final.json.")
    srcs = p.add_subparsers(dest="source", required=True, metavar="SOURCE")
    for conv in converters():
        c = srcs.add_parser(conv.name, help=conv.help, description=conv.help,
                            epilog=f"Demographics: {describe_mapping()} Each blanked value is noted in "
                                   f"conversion_report.csv and cases.csv." if conv.records_demographics else None)
        conv.add_arguments(c)
        _common(c)
        c.set_defaults(func=run, converter=conv)

    s = srcs.add_parser("install-splits",
                        help="copy a converted dataset's splits to nnUNet_preprocessed/DatasetNNN_NAME/splits_final.json")
    s.add_argument("--dataset-id", "-d", required=True, help="dataset id or folder name")
    s.add_argument("--scheme", choices=("final", "kfold", "loso"), default="final")
    s.add_argument("--raw-root", help="default: $nnUNet_raw")
    s.add_argument("--preprocessed-root", help="default: $nnUNet_preprocessed")
    s.set_defaults(func=run_install)


def run(args: argparse.Namespace) -> int:
    from nnunet_iph.dataset_conversion import install_splits

    try:
        ds = args.converter.run(args, _common_kwargs(args))
    except KeyboardInterrupt:  # staging and temporaries are already cleaned up on the way out
        print(f"nnunet-iph convert {args.source}: interrupted; the dataset is incomplete (no dataset.json) "
              f"until the same command is run again", file=sys.stderr)
        return 130
    print(ds)
    if args.install_splits:
        print(install_splits(ds))
    return 0


def run_install(args: argparse.Namespace) -> int:
    from nnunet_iph.dataset_conversion import install_splits

    print(install_splits(args.dataset_id, args.preprocessed_root, scheme=args.scheme, raw_root=args.raw_root))
    return 0
