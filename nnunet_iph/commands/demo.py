"""``nnunet-iph demo``: phantom -> convert -> plan -> train -> predict -> evaluate -> report."""

from __future__ import annotations

import argparse

from nnunet_iph.demo import DEFAULT, QUICK, run_demo


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on a synthetic phantom cohort (CPU)")
    p.add_argument("--workdir", default="demo_output", help="where everything goes (default: ./demo_output)")
    p.add_argument("--quick", action="store_true", help=f"tiny schedule ({QUICK.epochs} epochs), about 3 minutes")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = run_demo(args.workdir, QUICK if args.quick else DEFAULT)
    print(f"report: {report}")
    return 0
