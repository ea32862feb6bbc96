"""``nnunet-iph demo``: phantom -> convert -> plan -> train -> predict -> evaluate -> report."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from nnunet_iph.demo import DEFAULT, QUICK, run_demo
from nnunet_iph.demo_report import check_rule, failed_models


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on a synthetic phantom cohort (CPU)",
                       description="Single models (nnU-Net's default trainer, focal + Dice) compared on one "
                       "budget, plus an architecture, a 2.5D ensemble and a cascade; each must reach "
                       f"{check_rule(DEFAULT.min_dice)} (else exit 1, after the report); <= 10 min on 2 "
                       "cores (--quick: single models only, not checked, ~2 min). Re-running reuses finished steps.")
    p.add_argument("--workdir", default="demo_output", help="where everything goes (default: ./demo_output)")
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK.subjects} subjects, single models only, {QUICK.epochs} x {QUICK.iterations} iterations")
    p.add_argument("--epochs", type=int, help="epochs of the single models, the architecture %d more "
                   "(default: %d, quick: %d)" % (DEFAULT.architecture_extra_epochs, DEFAULT.epochs, QUICK.epochs))
    p.add_argument("--iterations", type=int, help="iterations per epoch of the single models (default: %d)"
                   % DEFAULT.iterations)
    p.add_argument("--subjects", type=int, help=f"phantom subjects (default: {DEFAULT.subjects})")
    p.add_argument("--seed", type=int, help="phantom, split and training seed (default: 0)")
    p.add_argument("--min-dice", type=float, help="the Dice every model must reach, on the mean over all test "
                   "cases and on the mean over the hemorrhage-positive ones "
                   f"(default: {DEFAULT.min_dice}, quick: not checked; 0 disables)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = QUICK if args.quick else DEFAULT
    overrides = {k: getattr(args, k) for k in ("epochs", "iterations", "subjects", "seed", "min_dice")
                 if getattr(args, k) is not None}
    if overrides.get("min_dice") == 0:
        overrides["min_dice"] = None
    settings = replace(settings, **overrides)
    result = run_demo(args.workdir, settings)
    for label, dice in result.dice.items():
        print(f"test Dice {dice:.3f}  hemorrhage cases {result.positive_dice[label]:.3f}  {label}")
    print(f"report: {result.report}")
    failed = (failed_models(result.dice, result.positive_dice, settings.min_dice)
              if settings.min_dice is not None else {})
    if failed:
        print(f"nnunet-iph demo: error: {len(failed)} of {len(result.dice)} model(s) did not learn (rule: "
              f"{check_rule(settings.min_dice)}): "
              + ", ".join(f"{k} {mean:.3f} / {positive:.3f}" for k, (mean, positive) in failed.items())
              + f" (all / hemorrhage cases); see {result.report}", file=sys.stderr)
        return 1
    return 0
