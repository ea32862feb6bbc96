"""``nnunet-iph demo``: phantom -> convert -> plan -> train -> predict -> evaluate -> report."""

from __future__ import annotations

import argparse
from dataclasses import replace

from nnunet_iph.demo import DEFAULT, QUICK, run_demo


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on a synthetic phantom cohort (CPU)",
                       description="Single models (nnU-Net's default trainer, focal + Dice) compared on one "
                       "budget, plus a showcase of an architecture, a 2.5D ensemble and a cascade; ~7 min on "
                       "2 cores (--quick: single models only, ~2 min). Re-running reuses finished steps.")
    p.add_argument("--workdir", default="demo_output", help="where everything goes (default: ./demo_output)")
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK.subjects} subjects, single models only, {QUICK.epochs} x {QUICK.iterations} iterations")
    p.add_argument("--epochs", type=int, help="epochs of the single models (default: %d, quick: %d)"
                   % (DEFAULT.epochs, QUICK.epochs))
    p.add_argument("--iterations", type=int, help="iterations per epoch of the single models (default: %d)"
                   % DEFAULT.iterations)
    p.add_argument("--subjects", type=int, help=f"phantom subjects (default: {DEFAULT.subjects})")
    p.add_argument("--seed", type=int, help="phantom, split and training seed (default: 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = QUICK if args.quick else DEFAULT
    overrides = {k: getattr(args, k) for k in ("epochs", "iterations", "subjects", "seed") if getattr(args, k)
                 is not None}
    report = run_demo(args.workdir, replace(settings, **overrides))
    print(f"report: {report}")
    return 0
