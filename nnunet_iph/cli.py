"""``nnunet-iph``: one command line; each subpackage registers its own subcommands."""

from __future__ import annotations

import argparse
import importlib
import sys

from nnunet_iph import __version__

# modules exposing ``register(subparsers)``; imported lazily so ``--help`` stays fast
SUBCOMMAND_MODULES = (
    "nnunet_iph.commands.env",
    "nnunet_iph.commands.slurm",
    "nnunet_iph.commands.convert",
    "nnunet_iph.commands.phantom",
    "nnunet_iph.commands.demo",
    "nnunet_iph.commands.analyze",
    "nnunet_iph.commands.plan",
    "nnunet_iph.commands.ensemble",
    "nnunet_iph.commands.predict",
    "nnunet_iph.commands.evaluate",
    "nnunet_iph.commands.postprocess",
    "nnunet_iph.commands.benchmark",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunet-iph", description="nnU-Net v2 extension for intracranial hemorrhage on head CT")
    parser.add_argument("--version", action="version", version=f"nnunet-iph {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _tolerate_ascii_terminals() -> None:
    """Under a C/POSIX locale stdout is ASCII; replace what it cannot show instead of crashing."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    _tolerate_ascii_terminals()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError) as err:  # user errors: a message, not a traceback
        print(f"nnunet-iph {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
