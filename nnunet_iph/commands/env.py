"""``nnunet-iph env``: shell exports so plain nnU-Net CLIs find our trainers."""

from __future__ import annotations

import argparse

from nnunet_iph.environment import export_lines, nnunet_env


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("env", help="print export lines for nnU-Net (use: eval \"$(nnunet-iph env --workdir W)\")")
    p.add_argument("--workdir", help="also set and create nnUNet_raw/_preprocessed/_results under this folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(export_lines(nnunet_env(args.workdir)))
    return 0
