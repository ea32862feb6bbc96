"""The converters the CLI offers: each converter module declares a :class:`Converter` named ``CONVERTER``.

``nnunet-iph convert`` iterates :func:`converters`, so a new source is one new module plus its name
in :data:`CONVERTER_MODULES`; nothing else has to know about it.
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

#: modules of this package that define ``CONVERTER``, in the order of ``nnunet-iph convert --help``
CONVERTER_MODULES = ("multisite", "instance", "physionet", "mistie")


@dataclass(frozen=True)
class Converter:
    name: str  # the subcommand
    help: str  # one line for ``nnunet-iph convert --help``
    add_arguments: Callable[[argparse.ArgumentParser], None]  # the source argument and own options
    #: ``run(args, common)``: convert and return the dataset folder; ``common`` holds the shared options
    #: as keyword arguments of the ``convert_*`` functions (raw_root, num_workers, strict, ...)
    run: Callable[[argparse.Namespace, dict[str, Any]], Path]
    records_demographics: bool = False  # the --help then explains the age/sex normalisation


def converters() -> list[Converter]:
    return [importlib.import_module(f"{__package__}.{m}").CONVERTER for m in CONVERTER_MODULES]
