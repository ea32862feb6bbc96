"""One nnU-Net plans file per anatomical plane, for 2D models trained along axial, coronal, sagittal.

nnU-Net slices its ``2d`` configuration along array axis 0 after ``transpose_forward``, which its
planner puts on the largest spacing (axial for typical CT). :func:`plane_planner` subclasses any
nnU-Net planner with a fixed transpose per plane; the plane's slicing axis is read from the image
headers (:mod:`nnunet_iph.planning.orientation`), so "coronal" means coronal for every image.
Each plane gets its own plans identifier (``nnUNetPlans_axial`` ...) and data identifier, and
nnU-Net transposes predictions back on export: the three planes' ``.npz`` probabilities share the
image geometry and can be averaged directly (:mod:`nnunet_iph.ensembling`).

Train with the plain CLI: ``nnUNetv2_train D 2d FOLD -tr TRAINER -p nnUNetPlans_coronal --npz``.
"""

from __future__ import annotations

import contextlib
import io
from copy import deepcopy
from pathlib import Path
from typing import Iterable, Sequence

from nnunet_iph.planning import PLANES
from nnunet_iph.planning.common import (dataset_id, dataset_name, ensure_fingerprint, plans_path,
                                        preprocess_configurations, training_cases)
from nnunet_iph.planning.orientation import (CANONICAL_MAPPING, HEADER_READERS, REORIENTING_READERS,
                                             check_orientations, plane_transpose)

PLANE_KEY = "nnunet_iph_plane"  # plans-level metadata written by this module


def plane_plans_identifier(plane: str, prefix: str = "nnUNetPlans") -> str:
    return f"{prefix}_{plane}"


def plane_planner(base: type | None = None) -> type:
    """``base`` (default nnU-Net's ``ExperimentPlanner``) with ``determine_transpose`` fixed per plane.

    Instances need ``plane`` and ``plane_mapping`` set before ``plan_experiment()``. Only the 2D
    configurations are kept: 3D configurations do not depend on the plane and live in the
    ordinary plans. ``extra_configurations`` (dict) are added on top, e.g. a ``2d`` variant
    with another ``architecture``.
    """
    if base is None:
        from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

        base = ExperimentPlanner

    class _PlanePlanner(base):  # type: ignore[misc, valid-type]
        plane: str = "axial"
        plane_mapping: Sequence[int] = CANONICAL_MAPPING
        extra_configurations: dict | None = None

        def determine_transpose(self):
            return plane_transpose(self.plane, self.plane_mapping)

        def save_plans(self, plans):
            plans["configurations"] = {k: v for k, v in plans["configurations"].items()
                                       if len(v.get("patch_size", ())) == 2}
            for name, cfg in (self.extra_configurations or {}).items():
                plans["configurations"][name] = deepcopy(cfg)
            plans["experiment_planner_used"] = base.__name__  # findable by nnU-Net; ours is recorded below
            plans[PLANE_KEY] = {"plane": self.plane, "array_axis_to_anatomical_axis": list(self.plane_mapping),
                                "slicing_array_axis": int(self.determine_transpose()[0][0]),
                                "planner": f"nnunet_iph.planning.planes.plane_planner({base.__name__})"}
            return super().save_plans(plans)

    _PlanePlanner.__name__ = _PlanePlanner.__qualname__ = f"Plane{base.__name__}"
    return _PlanePlanner


def reader_name(dataset: int | str) -> str:
    """Name of the image reader nnU-Net will use for the dataset (as its planner determines it)."""
    import json

    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

    from nnunet_iph.planning.common import raw_dir

    dataset_json = json.loads((raw_dir(dataset) / "dataset.json").read_text(encoding="utf-8"))
    example = next(iter(training_cases(dataset).values()))["images"][0]
    return determine_reader_writer_from_dataset_json(dataset_json, example, verbose=False).__name__


def dataset_orientation(dataset: int | str, reader_name: str, allow_mixed: bool = False) -> tuple[int, int, int]:
    """Array-axis -> anatomical-axis mapping every image of the dataset shares (see orientation.py)."""
    if reader_name in REORIENTING_READERS:
        return CANONICAL_MAPPING
    if reader_name not in HEADER_READERS:
        raise ValueError(f"{dataset_name(dataset)}: reader {reader_name} has no known array-axis order; "
                         "pass plane_mapping explicitly")
    images = [files["images"][0] for files in training_cases(dataset).values()]
    return check_orientations(images, allow_mixed=allow_mixed)


def plan_planes(dataset: int | str, planes: Iterable[str] = PLANES, plans_prefix: str = "nnUNetPlans",
                base_planner: type | None = None, gpu_memory_target_in_gb: float | None = None,
                allow_mixed_orientations: bool = False, plane_mapping: Sequence[int] | None = None,
                extra_configurations: dict | None = None, num_processes: int = 2,
                verbose: bool = False) -> dict[str, Path]:
    """Write one plans file per plane; return ``{plane: plans file}``. Refuses mixed orientations.

    nnU-Net's planner prints every configuration dict; ``verbose=False`` keeps that off stdout.
    """
    planes = list(dict.fromkeys(planes))
    unknown = [p for p in planes if p not in PLANES]
    if unknown or not planes:
        raise ValueError(f"unknown plane(s) {unknown}; choose from {list(PLANES)}")
    name = dataset_name(dataset)
    mapping = tuple(plane_mapping) if plane_mapping is not None else dataset_orientation(
        name, reader_name(name), allow_mixed_orientations)  # before the (slow) fingerprint: fail fast
    ensure_fingerprint(name, num_processes)
    cls = plane_planner(base_planner)
    kwargs = {} if gpu_memory_target_in_gb is None else {"gpu_memory_target_in_gb": gpu_memory_target_in_gb}
    out = {}
    for plane in planes:
        planner = cls(dataset_id(name), plans_name=plane_plans_identifier(plane, plans_prefix), **kwargs)
        planner.plane, planner.plane_mapping = plane, mapping
        planner.extra_configurations = extra_configurations
        with contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO()):
            planner.plan_experiment()
        out[plane] = plans_path(name, planner.plans_identifier)
    return out


def preprocess_planes(dataset: int | str, planes: Iterable[str] = PLANES, plans_prefix: str = "nnUNetPlans",
                      configurations: Sequence[str] = ("2d",), num_processes: int = 2,
                      force: bool = False) -> dict[str, dict[str, str]]:
    return {p: preprocess_configurations(dataset, plane_plans_identifier(p, plans_prefix), configurations,
                                         num_processes, force) for p in planes}


def plans_plane(plans: dict) -> str | None:
    """The plane a plans dict was made for (None for plans not written by :func:`plan_planes`)."""
    meta = plans.get(PLANE_KEY)
    return meta.get("plane") if isinstance(meta, dict) else None
