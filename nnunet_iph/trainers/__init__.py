"""All nnunet-iph trainers, for ``nnUNetv2_train ... -tr NAME`` (see :mod:`nnunet_iph.environment`).

Every module of this package is imported and each ``nnUNetTrainer`` subclass defined in it is
exported, so adding a trainer means adding a module (or a class) and nothing else.
Schedule variants ``<Trainer>_<E>ep_<I>it`` are made on demand by :func:`__getattr__`.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_iph.trainers.schedules import resolve_schedule_name


def _discover() -> dict[str, type[nnUNetTrainer]]:
    found: dict[str, type[nnUNetTrainer]] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, nnUNetTrainer) and obj.__module__ == module.__name__:
                found[name] = obj
    return found


TRAINERS = _discover()
globals().update(TRAINERS)
__all__ = sorted(TRAINERS)


def __getattr__(name: str) -> type[nnUNetTrainer]:
    cls = resolve_schedule_name(name, TRAINERS, __name__)
    if cls is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = cls
    return cls
