"""``nnunet-iph plan``: per-plane plans, cascade plans, and the preprocessing they need."""

from __future__ import annotations

import argparse
import json
import os

from nnunet_iph.planning import PLANES
from nnunet_iph.planning.intensity import DEFAULT_PROTOCOL, PROTOCOLS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan", help="plans per plane (2.5D) and coarse-to-fine cascade plans, preprocessed",
        description="Write one plans file per anatomical plane (nnUNetPlans_axial/_coronal/_sagittal) and/or the "
                    "cascade plans (2d_coarse -> 3d_fine [+ 2d_fine]) and preprocess what they need. Without "
                    "--planes/--cascade both are made. --intensity also writes (and preprocesses instead) their "
                    "variant with another HU normalisation, e.g. nnUNetPlans_midl2026_axial; with --from-plans "
                    "only the variants of existing plans. Needs nnUNet_raw/_preprocessed (nnunet-iph env).")
    p.add_argument("-d", "--dataset", required=True, help="dataset id or DatasetNNN_Name")
    p.add_argument("--planes", nargs="*", choices=PLANES, metavar="PLANE",
                   help="planes to plan (no value: all three)")
    p.add_argument("--plans-prefix", default="nnUNetPlans", help="plane plans are PREFIX_<plane> (default nnUNetPlans)")
    p.add_argument("--allow-mixed-orientations", action="store_true",
                   help="only warn (instead of refusing) when images are stored in different orientations")
    p.add_argument("--cascade", action="store_true", help="write the cascade plans")
    p.add_argument("--fine", choices=("3d", "2d", "both"), default="3d",
                   help="fine stage(s) of the cascade (default 3d)")
    p.add_argument("--cascade-plans", default="nnUNetPlans_cascade", help="plans identifier of the cascade")
    p.add_argument("--source-plans", default="nnUNetPlans",
                   help="plans the cascade configurations inherit from (planned with nnU-Net's default if missing)")
    p.add_argument("--coarse-trainer", help="trainer of the coarse stage, recorded for the fine trainer "
                                            "(e.g. nnUNetTrainerDenseNetCoarse_20ep_25it; default: found)")
    p.add_argument("--coarse-arch-kwargs", type=json.loads, metavar="JSON",
                   help='merged into the coarse configuration\'s arch_kwargs, e.g. \'{"width": 0.25}\' '
                        "(a CPU-sized nnUNetTrainerDenseNetCoarse)")
    p.add_argument("--intensity", choices=sorted(PROTOCOLS), default=DEFAULT_PROTOCOL, metavar="PROTOCOL",
                   help="HU normalisation: " + "; ".join(f"{k}: {v.description}" for k, v in PROTOCOLS.items())
                        + f" (default {DEFAULT_PROTOCOL}; see docs/intensity.md)")
    p.add_argument("--from-plans", nargs="+", metavar="PLANS",
                   help="with --intensity: only derive the variants of these existing plans (e.g. nnUNetPlans), "
                        "no planning")
    p.add_argument("-c", "--configurations", nargs="+", metavar="CONFIG",
                   help="with --from-plans: configurations to preprocess (default: those preprocessed for the "
                        "source plans)")
    p.add_argument("--overwrite-intensity-plans", action="store_true",
                   help="replace an intensity variant whose content differs (models trained on it no longer match)")
    p.add_argument("--folds", type=int, help="write a K-fold splits_final.json (if none exists yet)")
    p.add_argument("--verify-dataset-integrity", action="store_true",
                   help="run nnU-Net's dataset check before extracting the fingerprint")
    p.add_argument("--no-preprocess", action="store_true", help="only write plans")
    p.add_argument("--force-preprocess", action="store_true", help="preprocess even if data is already there")
    p.add_argument("-np", "--num-processes", type=int, default=int(os.environ.get("nnUNet_def_n_proc", 2)),
                   help="preprocessing workers (default $nnUNet_def_n_proc or 2)")
    p.add_argument("--gpu-memory", type=float, help="GPU memory target (GB) of nnU-Net's planner")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nnunet_iph.environment import apply_nnunet_env

    apply_nnunet_env()  # our trainers must be findable; data folders come from the user's environment
    from nnunet_iph.planning.cascade import CascadeLayout, write_cascade_plans
    from nnunet_iph.planning.common import (dataset_id, dataset_name, ensure_default_plans, ensure_fingerprint,
                                            plans_path, preprocess_configurations, write_splits)
    from nnunet_iph.planning.intensity import check_dataset_channels, variant_plans_name, write_intensity_plans
    from nnunet_iph.planning.planes import plan_planes, plane_plans_identifier

    intensity = args.intensity if args.intensity != DEFAULT_PROTOCOL else None
    if args.from_plans and (intensity is None or args.planes is not None or args.cascade):
        raise ValueError("--from-plans derives intensity variants only: give --intensity PROTOCOL (not "
                         f"{DEFAULT_PROTOCOL}) and neither --planes nor --cascade")
    if args.configurations and not args.from_plans:
        raise ValueError("-c/--configurations goes with --from-plans (planes and cascade preprocess what they need)")
    name = dataset_name(args.dataset)
    if intensity:
        check_dataset_channels(name, intensity)  # before any (slow) planning
    if args.folds:
        print(f"splits: {write_splits(name, args.folds)}")
    preprocess = not args.no_preprocess

    def plans_to_train(plans_identifier: str, configurations: list[str], label: str) -> str:
        """Write the intensity variant (if any), preprocess what will be trained; print it; return its id."""
        if intensity:
            variant = write_intensity_plans(name, plans_identifier, intensity, args.overwrite_intensity_plans)
            plans_identifier = variant.stem
        status = (preprocess_configurations(name, plans_identifier, configurations, args.num_processes,
                                            args.force_preprocess) if preprocess else {})
        print(f"{label:9s} plans: {plans_path(name, plans_identifier)} {status}")
        return plans_identifier

    if args.from_plans:
        for source in args.from_plans:
            configurations = args.configurations or _preprocessed_configurations(name, source)
            if preprocess and not configurations:
                raise ValueError(f"{plans_path(name, source)}: no configuration of it is preprocessed yet; "
                                 "name the ones to preprocess with -c CONFIG")
            variant = plans_to_train(source, configurations, "derived")
            print(f"train with: -p {variant}")
        return 0

    do_planes = args.planes is not None or not args.cascade
    do_cascade = args.cascade or args.planes is None
    planes = list(args.planes or PLANES)
    if do_planes:  # mixed orientations: refuse before the (slow) fingerprint
        from nnunet_iph.planning.planes import dataset_orientation, reader_name

        dataset_orientation(name, reader_name(name), args.allow_mixed_orientations)
    ensure_fingerprint(name, args.num_processes, args.verify_dataset_integrity)
    if do_planes:
        written = plan_planes(name, planes, args.plans_prefix, gpu_memory_target_in_gb=args.gpu_memory,
                              allow_mixed_orientations=args.allow_mixed_orientations, num_processes=args.num_processes)
        trained = [plans_to_train(plane_plans_identifier(plane, args.plans_prefix), ["2d"], plane) for plane in written]
        if intensity:
            prefix = variant_plans_name(args.plans_prefix, intensity)
            print(f"train with: -p {' / '.join(trained)}; 2.5D: nnunet-iph ensemble cv / predict --pipeline planes "
                  f"-p {prefix}")
    if do_cascade:
        ensure_default_plans(name, args.source_plans, args.gpu_memory)
        layout = CascadeLayout(plans=args.cascade_plans, coarse="2d_coarse",
                               fine_3d="3d_fine" if args.fine in ("3d", "both") else None,
                               fine_2d="2d_fine" if args.fine in ("2d", "both") else None)
        path = write_cascade_plans(name, layout, source_plans=args.source_plans, coarse_trainer=args.coarse_trainer,
                                   coarse_arch_kwargs=args.coarse_arch_kwargs)
        # fine first: the coarse stage's validation can only export for preprocessed fine configurations
        cascade = plans_to_train(path.stem, [*layout.fine, layout.coarse], "cascade")
        tr = args.coarse_trainer or "nnUNetTrainerDenseNetCoarse"
        print("next: train the coarse stage on ALL folds, then the fine stage, e.g.\n"
              f"  nnUNetv2_train {dataset_id(name)} {layout.coarse} FOLD -tr {tr} -p {cascade}\n"
              f"  nnUNetv2_train {dataset_id(name)} {layout.fine[0]} FOLD -tr nnUNetTrainerCascadeFine "
              f"-p {cascade}")
    return 0


def _preprocessed_configurations(dataset: str, plans_identifier: str) -> list[str]:
    """Configurations of the plans whose preprocessed data is complete (what has been trained or will be)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_iph.planning.common import load_plans, preprocessed_complete, preprocessed_dir, training_cases

    pm = PlansManager(load_plans(dataset, plans_identifier))
    cases = list(training_cases(dataset))
    return [c for c in pm.available_configurations
            if preprocessed_complete(preprocessed_dir(dataset) / pm.get_configuration(c).data_identifier, cases)]
