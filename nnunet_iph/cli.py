"""``nnunet-iph``: one command line; each subpackage registers its own subcommands."""

from __future__ import annotations

import argparse
import importlib
import os
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
    "nnunet_iph.commands.brain_mask",
    "nnunet_iph.commands.plan",
    "nnunet_iph.commands.ensemble",
    "nnunet_iph.commands.predict",
    "nnunet_iph.commands.volumes",
    "nnunet_iph.commands.evaluate",
    "nnunet_iph.commands.postprocess",
    "nnunet_iph.commands.benchmark",
    "nnunet_iph.commands.trainers",
    "nnunet_iph.commands.recipe",
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


def os_error_message(err: OSError) -> str:
    """One line naming the path: ``PATH: Permission denied`` rather than ``[Errno 13] ...``."""
    if err.filename is None:
        return str(err)
    paths = " -> ".join(str(f) for f in (err.filename, err.filename2) if f is not None)
    return f"{paths}: {err.strerror or err}"


def main(argv: list[str] | None = None) -> int:
    """Run one command. User errors (bad input, bad paths) are one line on stderr and exit 2; Ctrl-C is
    one line and exit 130 (atomic writes have removed their temporary files by then)."""
    _tolerate_ascii_terminals()
    prog = "nnunet-iph"
    try:
        args = build_parser().parse_args(argv)
        prog = f"nnunet-iph {args.command}"
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (``| head``): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit-time flush cannot fail
        return 141
    except OSError as err:  # missing, unreadable, unwritable paths, a file where a folder was meant ...
        print(f"{prog}: error: {os_error_message(err)}", file=sys.stderr)
        return 2
    except ValueError as err:  # bad input: a message, not a traceback
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
