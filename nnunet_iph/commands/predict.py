"""``nnunet-iph predict``: single model, 2.5D ensemble or cascade -> masks + volumes.csv (mL)."""

from __future__ import annotations

import argparse

from nnunet_iph.commands.ensemble import _models


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="segment a folder of CT files (single model, 2.5D planes, ensemble, cascade)",
        description="Runs nnU-Net's predictor for the chosen pipeline and writes OUT/<case>.nii.gz, "
                    "OUT/volumes.csv (hemorrhage volume per case, mL) and OUT/pipeline.json (timings).")
    p.add_argument("-i", "--input", required=True, help="folder of CT files (CASE_0000.nii.gz or CASE.nii.gz)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--pipeline", choices=("single", "ensemble", "planes", "cascade"), default="single")
    _models(p)
    p.add_argument("--coarse", metavar="MODEL", help="cascade: coarse model (default: from the fine model's plans)")
    p.add_argument("-f", "--folds", nargs="+", help="folds to use (default: every trained fold)")
    p.add_argument("-chk", "--checkpoint", default="checkpoint_final.pth")
    p.add_argument("--device", default=None, help="cpu, cuda or mps (default: cuda if available)")
    p.add_argument("--disable-tta", action="store_true", help="no mirroring test-time augmentation (faster)")
    p.add_argument("--step-size", type=float, default=0.5, help="sliding-window step (default 0.5)")
    p.add_argument("--save-probabilities", action="store_true", help="also write the final .npz probabilities")
    p.add_argument("-npp", type=int, default=0, help="preprocessing workers (0 with -nps 0: sequential, default)")
    p.add_argument("-nps", type=int, default=0, help="export workers")
    p.add_argument("--keep-members", action="store_true",
                   help="keep each member's output (masks; .npz too with --save-probabilities) in OUT/members/")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nnunet_iph.environment import apply_nnunet_env

    apply_nnunet_env()
    import torch

    from nnunet_iph.ensembling.ensemble import ModelRef
    from nnunet_iph.inference.predict import PredictSettings, predict

    if args.pipeline == "planes":
        args.planes = True
    if args.pipeline == "cascade" and not args.models and args.trainer:
        if not args.dataset:
            raise ValueError("-tr needs -d DATASET")
        plans = "nnUNetPlans_cascade" if args.plans_prefix == "nnUNetPlans" else args.plans_prefix
        config = "3d_fine" if args.configuration == "2d" else args.configuration
        args.models = [f"{args.trainer}__{plans}__{config}"]
    elif args.pipeline == "single" and not args.models and args.trainer:
        args.models = [f"{args.trainer}__{args.plans_prefix}__{args.configuration}"]
    from nnunet_iph.commands.ensemble import resolve_models

    models = resolve_models(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    folds = tuple(int(f) if f.isdigit() else f for f in args.folds) if args.folds else None
    settings = PredictSettings(device=device, folds=folds, checkpoint=args.checkpoint, tta=not args.disable_tta,
                               step_size=args.step_size, npp=args.npp, nps=args.nps,
                               save_probabilities=args.save_probabilities, keep_members=args.keep_members)
    coarse = ModelRef.resolve(args.coarse, args.dataset) if args.coarse else None
    res = predict(args.input, args.output, args.pipeline, models, settings, coarse)
    t = res.timing.summary()
    print(f"{len(res.cases)} case(s) -> {res.output_folder}\nvolumes: {res.volumes_csv}\n"
          f"time: {t['per_case_s']:.2f} s/case, outside the networks {100 * t['outside_network_share']:.1f} %, "
          f"nnunet-iph's own share {100 * t['own_overhead_share']:.1f} %")
    return 0
