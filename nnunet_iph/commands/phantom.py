"""``nnunet-iph phantom``: write a synthetic multi-site head-CT cohort with a manifest."""

from __future__ import annotations

import argparse

from nnunet_iph.phantom import SIZES, PhantomConfig, generate_cohort


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("phantom", help="generate a synthetic multi-site head-CT cohort (images, masks, manifest.csv)")
    p.add_argument("out_dir")
    p.add_argument("-n", "--subjects", type=int, default=12)
    p.add_argument("--sites", type=int, default=3)
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = PhantomConfig(n_subjects=args.subjects, n_sites=args.sites, size=args.size, seed=args.seed)
    print(generate_cohort(args.out_dir, config))
    return 0
