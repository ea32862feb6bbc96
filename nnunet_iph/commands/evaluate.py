"""``nnunet-iph evaluate REF_DIR PRED_DIR -o metrics.csv``: our metrics for a folder of predictions."""

from __future__ import annotations

import argparse
import os

from nnunet_iph.analysis import metric_defaults as M


def default_workers() -> int:
    return max(1, int(os.environ.get("nnUNet_def_n_proc", min(8, os.cpu_count() or 1))))


def add_metric_options(p: argparse.ArgumentParser) -> None:
    """Options that change metric values (shared with the post-processing commands)."""
    p.add_argument("--nsd-tolerance-mm", type=float, default=M.DEFAULT_NSD_TOLERANCE_MM, metavar="T",
                   help="tolerance of the normalised surface Dice in mm (column nsd_<T>mm; default %(default)g)")
    p.add_argument("--surface", choices=M.SURFACES, default=M.DEFAULT_SURFACE,
                   help="surface convention: area-weighted surface elements as DeepMind surface-distance "
                        "(surfel, default) or boundary voxels as MONAI/medpy (voxel)")
    p.add_argument("--hd95", dest="hd95_variant", choices=M.HD95_VARIANTS, default=M.DEFAULT_HD95_VARIANT,
                   help="HD95 = larger of the two directed percentiles (default) or percentile of the pooled "
                        "distances (medpy)")
    p.add_argument("--percentile", type=float, default=M.DEFAULT_PERCENTILE,
                   help="percentile of the robust Hausdorff distance (column hd95_mm; default %(default)g)")
    p.add_argument("--empty-penalty", choices=M.EMPTY_PENALTIES, default=M.DEFAULT_EMPTY_PENALTY,
                   help="distances when exactly one mask is empty: the image diagonal in mm (default) or NaN")
    p.add_argument("--labels", nargs="+", metavar="LABEL",
                   help="labels to evaluate (1 2, regions as 1+2; background 0 only when listed); default: "
                        "dataset.json next to REF_DIR, else every label found")
    p.add_argument("--dataset-json", metavar="FILE",
                   help="dataset.json with the labels (default: the one next to REF_DIR, if any); voxel values "
                        "outside its labels are refused")
    p.add_argument("--threshold", type=float, metavar="T",
                   help="predictions are probability maps: voxels >= T are foreground (without it, float data with "
                        "non-integer values is refused)")
    p.add_argument("--map-label", dest="map_labels", nargs="+", metavar="VALUE=LABEL",
                   help="read voxel value VALUE as LABEL in every image, e.g. 255=1 for 0/255 masks")
    p.add_argument("--file-ending", help="image file ending (default: any of .nii.gz .nii .nrrd .mha ...)")
    p.add_argument("--num-workers", type=int, default=default_workers(),
                   help="parallel processes (default: $nnUNet_def_n_proc or min(8, CPUs))")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="per-case Dice/HD95/ASSD/NSD/volume/lesion metrics of a prediction folder",
                       description="Pair REF_DIR and PRED_DIR by case name and write one row per case and "
                                   "label (CSV) plus a summary JSON. Unmatched files and geometry mismatches "
                                   "are errors.")
    p.add_argument("ref_dir", help="reference label images (e.g. nnUNet_raw/DatasetXXX/labelsTr)")
    p.add_argument("pred_dir", help="predicted label images")
    p.add_argument("-o", "--output", required=True, help="per-case CSV to write")
    p.add_argument("--summary", help="summary JSON (default: <output stem>_summary.json)")
    p.add_argument("--subset", action="store_true",
                   help="predictions cover only some references (one fold): skip references without a prediction")
    p.add_argument("--min-overlap-voxels", type=int, default=1,
                   help="voxels a reference lesion must share with the prediction to count as detected")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary table")
    add_metric_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nnunet_iph.analysis.evaluate import default_summary_path, evaluate_folders, format_summary

    evaluate_folders(args.ref_dir, args.pred_dir, output_csv=args.output, summary_json=args.summary,
                     labels=args.labels, surface=args.surface, nsd_tolerance_mm=args.nsd_tolerance_mm,
                     hd95_variant=args.hd95_variant, percentile=args.percentile, empty_penalty=args.empty_penalty,
                     min_overlap_voxels=args.min_overlap_voxels, file_ending=args.file_ending, subset=args.subset,
                     num_workers=args.num_workers, dataset_json=args.dataset_json, threshold=args.threshold,
                     map_labels=args.map_labels, progress=not args.quiet)
    summary_path = args.summary or default_summary_path(args.output)
    if not args.quiet:
        import json
        from pathlib import Path

        print(format_summary(json.loads(Path(summary_path).read_text(encoding="utf-8"))))
        print(f"wrote {args.output} and {summary_path}")
    return 0
