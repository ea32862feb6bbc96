"""``nnunet-iph ensemble {cv,predictions}``: softmax ensembles (2.5D planes or any models)."""

from __future__ import annotations

import argparse
import json


def _models(p: argparse.ArgumentParser) -> None:
    p.add_argument("-d", "--dataset", help="dataset id or name (needed unless -m gives folder paths)")
    p.add_argument("-m", "--models", nargs="+", metavar="MODEL",
                   help="TRAINER__PLANS__CONFIGURATION names (in the dataset's results) or model folders")
    p.add_argument("--planes", action="store_true",
                   help="2.5D: the three plane models of -tr (plans PREFIX_axial/_coronal/_sagittal), or the -m "
                        "models checked to be one per plane")
    p.add_argument("-tr", "--trainer", help="trainer of the plane models (with --planes)")
    p.add_argument("-p", "--plans-prefix", default="nnUNetPlans", help="plane plans prefix (default nnUNetPlans)")
    p.add_argument("-c", "--configuration", default="2d", help="configuration of the plane models (default 2d)")


def resolve_models(args: argparse.Namespace):
    from nnunet_iph.ensembling.ensemble import ModelRef, plane_models

    if args.models:
        return [ModelRef.resolve(m, args.dataset) for m in args.models]
    if args.planes:
        if not args.trainer or not args.dataset:
            raise ValueError("--planes needs -tr TRAINER and -d DATASET (or -m MODEL MODEL MODEL)")
        return plane_models(args.dataset, args.trainer, args.plans_prefix, args.configuration)
    raise ValueError("give -m MODEL ... or --planes -tr TRAINER")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ensemble", help="average softmax of several models (2.5D planes or any set)")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    cv = kinds.add_parser("cv", help="cross-validation outputs of all folds -> one folder with summary.json")
    _models(cv)
    cv.add_argument("-f", "--folds", nargs="+", help="folds (default: all folds of splits_final.json)")
    cv.add_argument("-o", "--output", help="output folder (default <results>/<Dataset>/ensembles/ensemble___...)")
    cv.add_argument("--compare", action="store_true", help="also evaluate each member's own cross-validation")
    cv.add_argument("-np", "--num-processes", type=int, default=2, help="evaluation workers (default 2)")
    cv.set_defaults(func=run_cv)
    pr = kinds.add_parser("predictions", help="prediction folders of new images (made with --save_probabilities)")
    pr.add_argument("-i", "--inputs", nargs="+", required=True, help="prediction folders")
    pr.add_argument("-o", "--output", required=True, help="output folder")
    pr.add_argument("--save-probabilities", action="store_true", help="also write the averaged .npz")
    pr.set_defaults(func=run_predictions)


def run_cv(args: argparse.Namespace) -> int:
    from nnunet_iph.environment import apply_nnunet_env

    apply_nnunet_env()
    from nnunet_iph.ensembling.ensemble import ensemble_crossvalidation, member_cv_summaries

    models = resolve_models(args)
    folds = [int(f) if f.isdigit() else f for f in args.folds] if args.folds else None
    out = ensemble_crossvalidation(models, args.output, folds, require_planes=args.planes,
                                   num_processes=args.num_processes)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    print(f"ensemble: {out}\nensemble Dice (foreground mean): {summary['foreground_mean']['Dice']:.4f}")
    if args.compare:
        used = json.loads((out / "ensemble.json").read_text(encoding="utf-8"))["folds"]
        for ident, dice in member_cv_summaries(models, used, args.num_processes).items():
            print(f"  member {ident}: {dice:.4f}")
    return 0


def run_predictions(args: argparse.Namespace) -> int:
    from nnunet_iph.ensembling.ensemble import ensemble_prediction_folders

    written = ensemble_prediction_folders(args.inputs, args.output, args.save_probabilities)
    print(f"{len(written)} case(s) -> {args.output}")
    return 0
