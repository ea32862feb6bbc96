"""``nnunet-iph recipe NAME -d DATASET``: one command per reference study (see docs/recipes.md)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from nnunet_iph.recipes.table import RECIPES

    names = ", ".join(RECIPES)
    p = sub.add_parser(
        "recipe", help=f"one command per reference study ({names}): plans, trainer grid, SLURM experiment",
        description="Write (and with --run run) a reference study's pipeline on a converted dataset: its plans in "
                    "nnUNet_preprocessed (intensity protocol, planes / cascade, preprocessed), and in -o DIR "
                    "recipe.json, experiment.toml (nnunet-iph slurm), commands.sh and README.md. "
                    "What each recipe does and how it differs from its paper: docs/recipes.md.")
    p.add_argument("name", metavar="NAME", help=f"recipe: {names}")
    p.add_argument("-d", "--dataset", required=True, help="dataset id or DatasetNNN_Name (converted, in nnUNet_raw)")
    p.add_argument("-o", "--out", help="output folder (default recipes/NAME/DatasetNNN_Name)")
    p.add_argument("--folds", nargs="+", type=int, default=[0, 1, 2, 3, 4], metavar="F",
                   help="folds to train (default 0 1 2 3 4)")
    p.add_argument("--schedule", metavar="Eep_Iit",
                   help="append a schedule suffix to every trainer, e.g. 20ep_25it or 2ep_5it_noTTA (quick runs)")
    p.add_argument("--run", action="store_true",
                   help="run the whole experiment here, in order (resumable: rerun to continue)")
    p.add_argument("--device", choices=("cuda", "cpu", "mps"), help="--run: device (default cuda if available)")
    p.add_argument("--dry-run", action="store_true", help="print what would be written (and run), write nothing")
    p.add_argument("--overwrite", action="store_true", help="replace different existing outputs and plans")
    p.add_argument("--no-preprocess", action="store_true", help="write the plans but do not preprocess")
    p.add_argument("-np", "--num-processes", type=int, default=int(os.environ.get("nnUNet_def_n_proc", 2)),
                   help="preprocessing workers and --run's CPU count per task (default $nnUNet_def_n_proc or 2)")
    p.add_argument("--gpu-memory", type=float, help="GPU memory target (GB) of nnU-Net's planner")
    p.set_defaults(func=run)


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run(args: argparse.Namespace) -> int:
    from nnunet_iph.recipes.table import get_recipe

    recipe = get_recipe(args.name)  # before anything slow: an unknown name lists the recipes
    from nnunet_iph.environment import apply_nnunet_env

    apply_nnunet_env()
    import json

    from nnunet_iph.planning.common import dataset_name, preprocessed_dir, raw_dir, results_dir
    from nnunet_iph.recipes.outputs import check_outputs, render, write_outputs
    from nnunet_iph.recipes.resolve import resolve
    from nnunet_iph.trainer_catalog import suggest, unknown_trainers

    name = dataset_name(args.dataset)
    raw = raw_dir(name)
    if not (raw / "dataset.json").is_file():
        raise FileNotFoundError(f"{raw / 'dataset.json'}: dataset {name} is not converted (nnunet-iph convert)")
    dataset_json = json.loads((raw / "dataset.json").read_text(encoding="utf-8"))
    out = Path(args.out) if args.out else Path("recipes") / recipe.name / name
    r = resolve(recipe, name, dataset_json, raw, preprocessed_dir(name), results_dir(name), out, args.folds,
                args.schedule, has_test_images=any((raw / "imagesTs").glob("*")),
                command_line=["nnunet-iph", *sys.argv[1:]] if sys.argv[0].endswith("nnunet-iph") else [])
    unknown = unknown_trainers(m.trainer for m in r.models)
    if unknown:
        raise ValueError(f"recipe {recipe.name}: unknown trainer(s) {', '.join(n + suggest(n) for n in unknown)}")
    files = render(r)
    check_outputs(r.out_dir, files, args.overwrite)
    if r.brain.get("warning"):
        print(f"nnunet-iph recipe: warning: {name}: {r.brain['note']}", file=sys.stderr)
    device = args.device or (_default_device() if args.run else "cuda")
    if args.dry_run:
        print(f"# would write {', '.join(files)} to {r.out_dir} and these plans into {preprocessed_dir(name)}: "
              f"{', '.join(s.identifier for s in r.plans)}")
        print(f"# skull ({r.brain['mode']}): {r.brain['note']}")  # what recipe.json's "brain" would record
        print(files["commands.sh"], end="")
        if args.run:
            from nnunet_iph.recipes.running import describe

            print(f"# --run would execute, in order (device {device}):")
            print("\n".join(describe(r, device, args.num_processes)))
        return 0
    from nnunet_iph.recipes.plans import write_recipe_plans

    status = write_recipe_plans(r, args.num_processes, preprocess=not args.no_preprocess, overwrite=args.overwrite,
                                gpu_memory=args.gpu_memory)
    for plans, configs in status.items():
        print(f"plans {plans}: {configs}")
    written = write_outputs(r.out_dir, files)
    print(f"recipe {recipe.name} on {name}: {len(r.models)} models x {len(r.folds)} folds; wrote "
          f"{', '.join(p.name for p in written)} to {r.out_dir}")
    if args.run:
        from nnunet_iph.recipes.running import run_locally

        n = run_locally(r, device, args.num_processes)
        print(f"recipe {recipe.name}: {n} step(s) done (logs in {r.out_dir / 'local' / 'logs'})")
    else:
        print(f"next: nnunet-iph slurm submit {r.out_dir / 'experiment.toml'} -o {r.out_dir / 'slurm'}   (cluster)\n"
              f"  or: bash {r.out_dir / 'commands.sh'}   or: the same command with --run   (this machine)")
    return 0
