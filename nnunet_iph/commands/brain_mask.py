"""``nnunet-iph brain-mask IN OUT [--qc]``: intracranial masks of head CT (offline, no weights)."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    from nnunet_iph.brain.settings import BrainMaskSettings

    d = BrainMaskSettings()
    p = sub.add_parser(
        "brain-mask", help="intracranial masks (brain + extra-axial spaces) of a folder of head CTs",
        description="Writes OUT/<case>.nii.gz (uint8 {0,1} on the CT's grid), OUT/brain_masks.csv (case, "
                    "intracranial volume in mL, seconds, warnings) and with --qc OUT/qc/<case>.png. Works on "
                    "full-range HU and on HU clipped at 100 (bone then reads 100). Scans that do not look "
                    "like head CT in HU, or whose mask volume is implausible, are passed through (an "
                    "all-ones mask) with a warning naming the case.")
    p.add_argument("input", metavar="IN", help="folder of CT files (CASE_0000.nii.gz or CASE.nii.gz, .nrrd, .mha)")
    p.add_argument("output", metavar="OUT", help="output folder")
    p.add_argument("--qc", action="store_true", help="also write a PNG montage per case")
    p.add_argument("--min-volume-ml", type=float, default=d.min_volume_ml,
                   help=f"smaller masks are implausible -> pass-through (default {d.min_volume_ml:g}; "
                        "lower it for infants)")
    p.add_argument("--max-volume-ml", type=float, default=d.max_volume_ml,
                   help=f"larger masks are implausible -> pass-through (default {d.max_volume_ml:g})")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nnunet_iph.brain.settings import BrainMaskSettings
    from nnunet_iph.brain.folder import CSV_NAME, brain_mask_folder

    settings = BrainMaskSettings(min_volume_ml=args.min_volume_ml, max_volume_ml=args.max_volume_ml)
    table = brain_mask_folder(args.input, args.output, settings, qc=args.qc, num_workers=args.workers,
                              progress=not args.no_progress)
    for text in table["warnings"].fillna(""):
        if text:
            print(f"warning: {text}", file=sys.stderr)
    masked = table["intracranial_ml"].notna()
    print(f"{len(table)} case(s) -> {args.output} ({int(masked.sum())} masked, {int((~masked).sum())} passed "
          f"through); {args.output}/{CSV_NAME}")
    return 0
