"""All nnunet-iph trainers, for ``nnUNetv2_train ... -tr NAME`` (see :mod:`nnunet_iph.environment`).

Every module of this package is imported and each ``nnUNetTrainer`` subclass defined in it is
exported, so adding a trainer means adding a module (or a class) and nothing else: its
``<Trainer>Adam`` variant (for the focal + Dice family), its variants by name ``<Trainer>_fg<NN>``
and ``<Trainer>[_fg<NN>]_<E>ep_<I>it`` (made on demand by :func:`__getattr__`), the tests of
``tests/trainers`` and ``nnunet-iph trainers`` follow from this discovery. :mod:`nnunet_iph.trainer_catalog` applies
the same rules to the source files without importing torch (for ``nnunet-iph slurm plan``).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_iph.trainer_catalog import ADAM_FAMILY
from nnunet_iph.trainers.hyperparameters import make_adam_variant
from nnunet_iph.trainers.schedules import resolve_schedule_name


def _discover() -> dict[str, type[nnUNetTrainer]]:
    found: dict[str, type[nnUNetTrainer]] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, nnUNetTrainer) and obj.__module__ == module.__name__:
                found[name] = obj
    return found


#: the trainer classes defined in this package's modules
DEFINED_TRAINERS = _discover()
#: ``<Trainer>Adam`` for every trainer of the focal + Dice family
ADAM_TRAINERS = {cls.__name__: cls for cls in (make_adam_variant(base, __name__) for base in DEFINED_TRAINERS.values()
                                              if issubclass(base, DEFINED_TRAINERS[ADAM_FAMILY]))}
TRAINERS = {**DEFINED_TRAINERS, **ADAM_TRAINERS}
globals().update(TRAINERS)
__all__ = sorted(TRAINERS)


def __getattr__(name: str) -> type[nnUNetTrainer]:
    cls = resolve_schedule_name(name, TRAINERS, __name__, globals())
    if cls is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return cls
