"""``nnunet-iph predict``: single model, 2.5D ensemble or cascade -> masks + volumes.csv (mL); and
``nnunet-iph prepare-inputs``: the files plain ``nnUNetv2_predict`` needs for a model whose training data
were skull-stripped or had CT channel copies (:mod:`nnunet_iph.inference.model_inputs`)."""

from __future__ import annotations

import argparse

import sys

from nnunet_iph.commands.ensemble import _models

_IRREGULAR_HELP = ("DICOM series with gantry tilt or missing slices: refuse (default), segment the slices as read, "
                   "or resample onto a regular grid (masks go back onto the source slices)")


def register(sub: argparse._SubParsersAction) -> None:
    _register_prepare(sub)
    p = sub.add_parser(
        "predict", help="segment a folder of CT files (single model, 2.5D planes, ensemble, cascade)",
        description="Runs nnU-Net's predictor for the chosen pipeline and writes OUT/<case>.nii.gz, "
                    "OUT/volumes.csv (hemorrhage volume per case, mL) and OUT/pipeline.json (timings).")
    p.add_argument("-i", "--input", required=True,
                   help="folder of CT files (CASE_0000.nii.gz or CASE.nii.gz) and/or of DICOM case folders "
                        "(one folder per case, any layout inside; the series is chosen: see docs/dicom.md)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--pipeline", choices=("single", "ensemble", "planes", "cascade"), default="single")
    _models(p)
    p.add_argument("--model", nargs="+", metavar="ZIP",
                   help="model zip(s) from nnUNetv2_export_model_to_zip: installed into $nnUNet_results (an identical "
                        "installed model is reused), then used; -tr/-p/-c choose when the zips hold several")
    p.add_argument("--replace-model", action="store_true",
                   help="with --model: overwrite a different installed model of the same name")
    p.set_defaults(plans_prefix=None, configuration=None)  # None: -p/-c not given (--model); run() restores defaults
    p.add_argument("--coarse", metavar="MODEL", help="cascade: coarse model (default: from the fine model's plans)")
    p.add_argument("-f", "--folds", nargs="+", help="folds to use (default: every trained fold)")
    p.add_argument("-chk", "--checkpoint", default="checkpoint_final.pth")
    p.add_argument("--device", default=None, help="cpu, cuda or mps (default: cuda if available)")
    p.add_argument("--disable-tta", action="store_true", help="no mirroring test-time augmentation (faster)")
    p.add_argument("--step-size", type=float, default=0.5, help="sliding-window step (default 0.5)")
    p.add_argument("--save-probabilities", action="store_true", help="also write the final .npz probabilities")
    p.add_argument("-npp", type=int, default=0, help="preprocessing workers (0 with -nps 0: sequential, default)")
    p.add_argument("-nps", type=int, default=0, help="export workers")
    p.add_argument("--series-uid", nargs="+", default=(), metavar="UID",
                   help="DICOM: segment this SeriesInstanceUID in the case folder holding it (default: the axial CT "
                        "series with the most slices, localizers excluded)")
    p.add_argument("--dicom-irregular", choices=("error", "keep", "resample"), default="error", help=_IRREGULAR_HELP)
    p.add_argument("--no-dicom-seg", action="store_true", help="DICOM cases: no OUT/<case>.seg.dcm")
    p.add_argument("--no-qc", action="store_true", help="no OUT/qc/<case>.png pictures")
    p.add_argument("--brain-mask", action="store_true",
                   help="also extract the intracranial mask of each input (OUT/brain/<case>, see nnunet-iph "
                        "brain-mask) and report its volume as intracranial_ml in volumes.csv")
    p.add_argument("--brain-crop", nargs="?", type=float, const=10.0, default=None, metavar="MARGIN_MM",
                   help="segment each CT cropped to its intracranial mask's bounding box plus MARGIN_MM per side "
                        "(default 10), masks pasted back onto the full grid (faster where the network dominates; on a "
                        "resampled scan the masks differ from the uncropped run's: see docs/brain-extraction.md)")
    p.add_argument("--restrict-to-brain", action="store_true",
                   help="predicted voxels outside the intracranial mask become background in the written masks, "
                        "DICOM-SEGs, volumes.csv and QC pictures (implies --brain-mask; see docs/analysis-metrics.md)")
    p.add_argument("--patients", metavar="CSV",
                   help="case -> patient (and time / order) map: OUT/patients.csv with the volume trajectory and "
                        "the hematoma-expansion flag (see docs/volumes-and-qc.md)")
    p.add_argument("--keep-members", action="store_true",
                   help="keep each member's output (masks; .npz too with --save-probabilities) in OUT/members/")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nnunet_iph.environment import apply_nnunet_env

    apply_nnunet_env()
    given = (args.trainer, args.plans_prefix, args.configuration)
    args.plans_prefix, args.configuration = args.plans_prefix or "nnUNetPlans", args.configuration or "2d"
    if args.model:
        if args.models:
            raise ValueError("give --model ZIP or -m MODEL, not both")
        from nnunet_iph.inference.model_zip import models_from_zips

        args.models = [str(m) for m in models_from_zips(args.model, args.pipeline, *given, replace=args.replace_model)]
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
                               save_probabilities=args.save_probabilities, keep_members=args.keep_members,
                               dicom_irregular=args.dicom_irregular, series_uids=tuple(args.series_uid),
                               dicom_seg=not args.no_dicom_seg, qc=not args.no_qc, brain_mask=args.brain_mask,
                               restrict_to_brain=args.restrict_to_brain, patients=args.patients,
                               brain_crop=args.brain_crop)
    coarse = ModelRef.resolve(args.coarse, args.dataset) if args.coarse else None
    res = predict(args.input, args.output, args.pipeline, models, settings, coarse)
    for case in res.dicom:
        print(case.describe())
    for w in res.warnings:
        print(f"warning: {w}", file=sys.stderr)
    t = res.timing.summary()
    print(f"{len(res.cases)} case(s) -> {res.output_folder}\nvolumes: {res.volumes_csv}\n"
          f"time: {t['per_case_s']:.2f} s/case, outside the networks {100 * t['outside_network_share']:.1f} %, "
          f"nnunet-iph's own share {100 * t['own_overhead_share']:.1f} %")
    return 0


def _register_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare-inputs", help="write the input files plain nnUNetv2_predict needs for a model (skull stripping, "
                               "CT channel copies recorded in its dataset.json)",
        description="For a model trained on a dataset converted with --brain-mask and/or --ct-channels N, plain "
                    "nnUNetv2_predict on raw CTs would not see what the network was trained on. This writes "
                    "OUT/<case>_0000..<case>_{N-1} exactly as the conversion did (nnunet-iph predict does the same "
                    "by itself): then run nnUNetv2_predict -i OUT.")
    p.add_argument("input", metavar="IN", help="folder of CT files (CASE_0000.nii.gz or CASE.nii.gz) and/or DICOM "
                                               "case folders")
    p.add_argument("output", metavar="OUT", help="output folder (empty, or holding only these cases' files)")
    p.add_argument("-m", "--model", required=True, metavar="MODEL_FOLDER",
                   help="trained model folder (holds dataset.json), e.g. $nnUNet_results/DatasetNNN_NAME/"
                        "TRAINER__PLANS__CONFIG")
    p.add_argument("--series-uid", nargs="+", default=(), metavar="UID", help="DICOM: the series to use")
    p.add_argument("--dicom-irregular", choices=("error", "keep", "resample"), default="error",
                   help=_IRREGULAR_HELP.replace(" (masks go back onto the source slices)", ""))
    p.set_defaults(func=run_prepare)


def run_prepare(args: argparse.Namespace) -> int:
    from nnunet_iph.inference.model_inputs import prepare_input_folder

    prepared, steps = prepare_input_folder(args.input, args.output, args.model, args.dicom_irregular,
                                           tuple(args.series_uid))
    for case in prepared.values():
        for w in case.warnings:
            print(f"warning: {w}", file=sys.stderr)
    done = steps.record() or "none (files copied in nnU-Net naming)"
    print(f"{len(prepared)} case(s) -> {args.output} (steps: {done}); now: nnUNetv2_predict -i {args.output} ...")
    return 0
