"""Which trainer names exist, read from the source files: no torch, no nnunetv2 import.

Why static: ``nnunet-iph slurm plan`` runs on a login node, where importing torch costs seconds
(or is impossible), yet a misspelt ``-tr`` name should be refused before a week of array jobs
fails one by one. The rules here mirror :mod:`nnunet_iph.trainers`, whose import-time discovery
is the runtime truth; ``tests/trainers`` checks that both give the same names.

- every class of ``nnunet_iph/trainers/*.py`` that derives (through other classes of that folder)
  from ``nnUNetTrainer``;
- ``<T>Adam`` for every ``T`` derived from ``nnUNetTrainerFocalDice`` (the reference study's loss
  family; :mod:`nnunet_iph.trainers.hyperparameters`);
- variants by name of any of those, and of nnU-Net's ``nnUNetTrainer``
  (:mod:`nnunet_iph.trainers.schedules`): ``<T>[_fg<NN>][_<E>ep_<I>it[_noTTA]]``, suffixes in that
  order only, at least one of them (foreground oversampling NN %, 1 <= NN <= 100 without leading
  zero, so that one setting has one class name and one results folder);
- nnU-Net's own trainers (classes under ``nnunetv2/training/nnUNetTrainer``) and the classes of
  the folders in ``nnUNet_extTrainer``, as nnU-Net's ``-tr`` lookup finds them.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable

TRAINERS_DIR = Path(__file__).resolve().parent / "trainers"
NNUNET_BASE = "nnUNetTrainer"
ADAM_SUFFIX = "Adam"
ADAM_FAMILY = "nnUNetTrainerFocalDice"
#: ``<base>[_fg<NN>][_<E>ep_<I>it[_noTTA]]`` with at least one suffix (the lookahead); ``fg`` is
#: checked by :func:`foreground_percent`, so ``_fg0`` / ``_fg101`` get a reason, not just "unknown"
SCHEDULE_NAME = re.compile(r"^(?P<base>nnUNetTrainer\w*?)(?=_fg\d|_\d+ep_\d+it)(?:_fg(?P<fg>\d+))?"
                           r"(?:_(?P<epochs>\d+)ep_(?P<iters>\d+)it(?P<no_tta>_noTTA)?)?$")
FOREGROUND_HELP = ("<Trainer>_fg<NN>: <Trainer> with NN % of each batch's patches forced to contain foreground "
                   "(nnU-Net: oversample_foreground_percent, default 33), 1 <= NN <= 100, no leading zero; "
                   "_fg100 centres every patch on a lesion voxel.")
SCHEDULE_HELP = ("<Trainer>_<E>ep_<I>it: <Trainer> for E epochs x I iterations (validation: max(1, I // 5) "
                 "iterations); <Trainer>_<E>ep_<I>it_noTTA: the same without mirroring at validation and "
                 "prediction. <Trainer>: any name listed here, or nnU-Net's nnUNetTrainer. Suffixes combine "
                 "in this order only: <Trainer>_fg<NN>_<E>ep_<I>it_noTTA.")


def foreground_percent(text: str) -> int:
    """NN of a ``_fg<NN>`` suffix; ValueError unless 1 <= NN <= 100 written without leading zero
    (``_fg066`` next to ``_fg66`` would train the same thing into a second results folder)."""
    if not text.isdigit() or str(int(text)) != text or not 1 <= int(text) <= 100:
        raise ValueError(f"_fg{text}: foreground oversampling needs a percentage 1..100 without leading zero")
    return int(text)


def adam_description(base: str) -> str:
    """Docstring of a generated ``<base>Adam`` class (and its line in ``nnunet-iph trainers``)."""
    return f"{base} with the reference study's optimiser: Adam lr 5e-4 + ReduceLROnPlateau on the validation loss."


@dataclass(frozen=True)
class TrainerInfo:
    name: str
    description: str
    module: str  # file stem under nnunet_iph/trainers ("" for generated classes)
    bases: tuple[str, ...]
    generated: bool = False


def _class_defs(path: Path) -> list[ast.ClassDef]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return []  # nnU-Net would fail to import it too; not our message to give here
    return [node for node in tree.body if isinstance(node, ast.ClassDef)]


def _base_name(node: ast.expr) -> str:
    return ast.unparse(node).rsplit(".", 1)[-1]


@lru_cache(maxsize=4)
def package_trainers(folders: tuple[Path, ...] = (TRAINERS_DIR,)) -> dict[str, TrainerInfo]:
    """nnunet-iph's trainers by name (the modules of ``folders``), generated ``<T>Adam`` variants included."""
    classes: dict[str, TrainerInfo] = {}
    for path in sorted(p for folder in folders for p in folder.glob("*.py")):
        if path.stem == "__init__":
            continue
        for node in _class_defs(path):
            doc = (ast.get_docstring(node) or "").strip().split("\n\n")[0].replace("``", "")
            classes[node.name] = TrainerInfo(node.name, " ".join(doc.split()), path.stem,
                                             tuple(_base_name(b) for b in node.bases))
    trainers: dict[str, TrainerInfo] = {}
    changed = True
    while changed:  # derived from nnUNetTrainer through classes of this folder
        changed = False
        for name, info in classes.items():
            if name not in trainers and any(b == NNUNET_BASE or b in trainers for b in info.bases):
                trainers[name] = info
                changed = True
    trainers = {n: trainers[n] for n in sorted(trainers)}

    def in_family(name: str) -> bool:
        return name == ADAM_FAMILY or any(in_family(b) for b in trainers[name].bases if b in trainers)

    adam = {f"{n}{ADAM_SUFFIX}": TrainerInfo(f"{n}{ADAM_SUFFIX}", adam_description(n), "", (n,), generated=True)
            for n in trainers if in_family(n)}
    return {**trainers, **adam}


def _classes_under(folder: Path) -> set[str]:
    return {node.name for path in folder.rglob("*.py") for node in _class_defs(path)}


@lru_cache(maxsize=1)
def nnunet_trainers() -> frozenset[str]:
    """Class names nnU-Net's ``-tr`` lookup finds in its own package (empty if nnunetv2 is absent)."""
    spec = importlib.util.find_spec("nnunetv2")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    return frozenset(_classes_under(Path(list(spec.submodule_search_locations)[0]) / "training" / "nnUNetTrainer"))


def is_schedule_variant(name: str, known: Iterable[str]) -> bool:
    """Whether ``name`` is a valid ``_fg`` / schedule variant of ``nnUNetTrainer`` or one of ``known``."""
    match = SCHEDULE_NAME.match(name)
    if match is None or not (match["base"] == NNUNET_BASE or match["base"] in set(known)):
        return False
    if match["fg"] is not None:
        try:
            foreground_percent(match["fg"])
        except ValueError:
            return False
    return True


def unknown_trainers(names: Iterable[str], ext_trainer_path: str = "") -> list[str]:
    """The names in ``names`` that neither nnU-Net, nnunet-iph nor a folder of ``ext_trainer_path``
    (``os.pathsep``-separated, like ``nnUNet_extTrainer``) defines."""
    ours = package_trainers()
    known = set(ours) | nnunet_trainers()
    for folder in filter(None, ext_trainer_path.split(os.pathsep)):
        if Path(folder).is_dir():
            known |= _classes_under(Path(folder))
    return [n for n in dict.fromkeys(names) if n not in known and not is_schedule_variant(n, ours)]


_SUFFIXES = ("_fg", "ep_", "_noTTA")  # a suffix's kind, in the grammar's order
_SUFFIXED = re.compile(r"^(nnUNetTrainer\w*?)((?:_fg\d+|_\d+ep_\d+it|_noTTA)+)$")


def _in_suffix_order(name: str) -> str:
    """``name`` with its variant suffixes sorted into the grammar's order (unchanged if it has none)."""
    match = _SUFFIXED.match(name)
    if match is None:
        return name
    pieces = re.findall(r"_fg\d+|_\d+ep_\d+it|_noTTA", match[2])
    return match[1] + "".join(sorted(pieces, key=lambda p: next(i for i, k in enumerate(_SUFFIXES) if k in p)))


def suggest(name: str) -> str:
    """`` (did you mean X?)`` for a misspelt trainer name, the reason for a bad ``_fg`` suffix, else ''."""
    match = SCHEDULE_NAME.match(name)
    if match and match["fg"] is not None:
        try:
            foreground_percent(match["fg"])
        except ValueError as error:
            return f" ({error})"
    reordered = _in_suffix_order(name)
    if reordered != name and not unknown_trainers([reordered]):
        return f" (suffixes go in the order _fg<NN>_<E>ep_<I>it_noTTA: did you mean {reordered}?)"
    stem = match["base"] if match else name
    close = difflib.get_close_matches(stem, [*package_trainers(), *nnunet_trainers()], n=1, cutoff=0.8)
    return f" (did you mean {close[0]}{name[len(stem):]}?)" if close else ""
