"""``nnunet-iph postprocess IN OUT`` and ``nnunet-iph choose-postprocessing REF PRED -o DIR``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nnunet_iph.commands.evaluate import add_metric_options, default_workers


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("postprocess", help="clean a folder of predicted masks (small components, holes, ...)",
                       description="Apply post-processing to every label image of IN and write it to OUT "
                                   "(same names and geometry). Steps run in the order restrict to brain, closing, "
                                   "fill holes, opening, remove small components, keep largest.")
    p.add_argument("input_dir")
    p.add_argument("output_dir")
    p.add_argument("--config", help="postprocessing.json from choose-postprocessing (or a plain config); "
                                    "options given here override it")
    p.add_argument("--min-volume-ml", type=float, help="remove connected components smaller than this (mL)")
    p.add_argument("--keep-largest", type=int, metavar="K", help="keep the K largest components")
    p.add_argument("--fill-holes", choices=("2d", "3d"), help="fill enclosed holes per slice (2d) or in 3D")
    p.add_argument("--opening", type=float, metavar="R", help="morphological opening, kernel radius R")
    p.add_argument("--closing", type=float, metavar="R", help="morphological closing, kernel radius R")
    p.add_argument("--radius-unit", choices=("mm", "voxel"), help="unit of R (default mm: ellipsoid from spacing)")
    p.add_argument("--labels", nargs="+", type=int, help="labels to process (default: every foreground label)")
    p.add_argument("--restrict-to-brain", action="store_true", default=None,
                   help="predicted voxels outside the case's intracranial mask become background (every label; "
                        "needs --brain-masks or --images, also when --config restricts)")
    _brain_options(p)
    p.add_argument("--file-ending", help="image file ending (default: any nnU-Net ending)")
    p.add_argument("--num-workers", type=int, default=default_workers())
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=run_apply)

    c = sub.add_parser("choose-postprocessing",
                       help="pick post-processing on cross-validation predictions (before/after report)",
                       description="Try a small grid of post-processing options on PRED_DIR against REF_DIR and "
                                   "keep what improves the mean metric (greedy, like nnU-Net's "
                                   "determine_postprocessing). Writes postprocessing.json, "
                                   "postprocessing_cases.csv and postprocessing.md to -o.")
    c.add_argument("ref_dir")
    c.add_argument("pred_dir")
    c.add_argument("-o", "--output", required=True, help="folder for the choice and the before/after tables")
    c.add_argument("--metric", default="dice", help="metric to improve (default dice; e.g. hd95_mm, nsd_2mm)")
    c.add_argument("--grid", help="JSON list of candidate configs (default: the built-in grid)")
    c.add_argument("--no-greedy", action="store_true", help="choose one option only, do not stack options")
    c.add_argument("--min-improvement", type=float, default=0.0,
                   help="required improvement of the mean over the current choice (default 0)")
    c.add_argument("--subset", action="store_true", help="predictions cover only some references")
    c.add_argument("--apply-to", metavar="DIR", help="also write the chosen post-processing of PRED_DIR here")
    c.add_argument("-q", "--quiet", action="store_true")
    _brain_options(c, " (adds the restriction to the brain to the grid, alone and combined)")
    add_metric_options(c)
    c.set_defaults(func=run_choose)


def _brain_options(p: argparse.ArgumentParser, what: str = "") -> None:
    p.add_argument("--brain-masks", metavar="DIR",
                   help="intracranial masks <case><ending> on the predictions' grid (nnunet-iph brain-mask, "
                        f"predict --brain-mask OUT/brain){what}")
    p.add_argument("--images", metavar="DIR",
                   help="CT images (CASE_0000 or CASE): compute the intracranial masks from them" + what)


def _brain_source(args: argparse.Namespace):
    from nnunet_iph.postprocessing.brain import BrainSource

    return BrainSource.from_options(args.brain_masks, args.images, args.file_ending)


def _print_restriction(results: list[dict]) -> None:
    restricted = [r for r in results if "brain_note" in r]
    if not restricted:
        return
    changed = [r for r in restricted if r["removed_outside_brain"]]
    passed = [r["case"] for r in restricted if r["brain_passed_through"]]
    print(f"restrict to brain: {sum(r['removed_outside_brain'] for r in restricted)} voxel(s) removed in "
          f"{len(changed)} of {len(restricted)} image(s)")
    if passed:
        print(f"passed through (all-ones brain mask, not restricted): {', '.join(passed)}")


def run_apply(args: argparse.Namespace) -> int:
    from nnunet_iph.postprocessing.folder import load_config, postprocess_folder
    from nnunet_iph.postprocessing.operations import PostprocessingConfig

    base = load_config(args.config).to_dict() if args.config else PostprocessingConfig().to_dict()
    overrides = {"min_volume_ml": args.min_volume_ml, "keep_largest": args.keep_largest,
                 "fill_holes": args.fill_holes, "opening_radius": args.opening, "closing_radius": args.closing,
                 "radius_unit": args.radius_unit, "labels": args.labels, "restrict_to_brain": args.restrict_to_brain}
    base.update({k: v for k, v in overrides.items() if v is not None})
    config = PostprocessingConfig.from_dict(base)
    if config.is_identity:
        raise ValueError("no post-processing step given (use --config or e.g. --min-volume-ml 0.1)")
    brain = _brain_source(args)
    if brain is not None and not config.restrict_to_brain:
        raise ValueError("--brain-masks / --images given, but the configuration does not restrict to the brain "
                         "(add --restrict-to-brain)")
    results = postprocess_folder(args.input_dir, args.output_dir, config, args.file_ending, args.num_workers,
                                 progress=not args.quiet, brain=brain)
    if not args.quiet:
        changed = sum(1 for r in results if r["changed_voxels"])
        print(f"{config.describe()}: {len(results)} images written to {args.output_dir} ({changed} changed)")
        _print_restriction(results)
    return 0


def run_choose(args: argparse.Namespace) -> int:
    from nnunet_iph.postprocessing.choose import choose_postprocessing, format_choice
    from nnunet_iph.postprocessing.folder import postprocess_folder

    from nnunet_iph.analysis.output_paths import check_output_dir

    if args.apply_to:  # before the (long) choice, not after it
        check_output_dir(args.apply_to, "--apply-to folder")
    brain = _brain_source(args)
    grid = None
    if args.grid:
        try:
            text = Path(args.grid).read_text(encoding="utf-8") if Path(args.grid).is_file() else args.grid
        except UnicodeDecodeError as err:
            raise ValueError(f"--grid {args.grid}: not a text file ({err})") from None
        try:
            grid = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"--grid is neither a JSON file nor JSON text: {err}") from None
        if not isinstance(grid, list) or not all(isinstance(g, dict) for g in grid):
            raise ValueError("--grid must be a JSON list of objects like {\"min_volume_ml\": 0.1}")
    result = choose_postprocessing(args.ref_dir, args.pred_dir, output_dir=args.output, metric=args.metric,
                                   grid=grid, greedy=not args.no_greedy, min_improvement=args.min_improvement,
                                   labels=args.labels, file_ending=args.file_ending, subset=args.subset,
                                   surface=args.surface, nsd_tolerance_mm=args.nsd_tolerance_mm,
                                   hd95_variant=args.hd95_variant, percentile=args.percentile,
                                   empty_penalty=args.empty_penalty, dataset_json=args.dataset_json,
                                   threshold=args.threshold, map_labels=args.map_labels, progress=not args.quiet,
                                   brain=brain)
    if not args.quiet:
        print(format_choice(result))
        print(f"wrote {Path(args.output) / 'postprocessing.json'}")
    if args.apply_to and not result.chosen.is_identity:
        postprocess_folder(args.pred_dir, args.apply_to, result.chosen, args.file_ending, args.num_workers,
                           progress=not args.quiet, brain=brain)
    elif args.apply_to and not args.quiet:
        print(f"no post-processing chosen: nothing written to {args.apply_to}")
    return 0
