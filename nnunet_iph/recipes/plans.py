"""The recipe's plans in ``nnUNet_preprocessed``, made by the functions ``nnunet-iph plan`` uses.

Set the nnU-Net environment first (:func:`nnunet_iph.environment.apply_nnunet_env`).
"""

from __future__ import annotations

import json

from nnunet_iph.recipes.resolve import BASE_PLANS, CASCADE_PLANS, Resolved


def write_recipe_plans(r: Resolved, num_processes: int = 2, preprocess: bool = True, overwrite: bool = False,
                       gpu_memory: float | None = None) -> dict[str, dict[str, str]]:
    """Write every plans file of ``r`` (planes, nnU-Net's default, cascade, intensity variants) and preprocess
    their configurations unless ``preprocess`` is False. Returns ``{plans: {configuration: done|reused|-}}``."""
    from nnunet_iph.planning.cascade import PREVIOUS_TRAINER_KEY, CascadeLayout, write_cascade_plans
    from nnunet_iph.planning.common import (ensure_default_plans, ensure_fingerprint, plans_path,
                                            preprocess_configurations)
    from nnunet_iph.planning.intensity import write_intensity_plans
    from nnunet_iph.planning.planes import plan_planes

    ensure_fingerprint(r.dataset, num_processes)
    planes = [s.plane for s in r.plans if s.kind == "plane"]
    if planes:
        plan_planes(r.dataset, planes, BASE_PLANS, gpu_memory_target_in_gb=gpu_memory, num_processes=num_processes)
    if any(s.kind in ("default", "cascade") for s in r.plans):
        ensure_default_plans(r.dataset, BASE_PLANS, gpu_memory)
    if any(s.kind == "cascade" for s in r.plans):
        path = plans_path(r.dataset, CASCADE_PLANS)
        if path.is_file() and not overwrite:
            old = json.loads(path.read_text(encoding="utf-8"))["configurations"].get("3d_fine", {})
            if old.get(PREVIOUS_TRAINER_KEY) not in (None, r.coarse_trainer):
                raise ValueError(f"{path}: its fine stage reads the coarse stage of {old[PREVIOUS_TRAINER_KEY]}, "
                                 f"not {r.coarse_trainer}; pass --overwrite to replace it")
        write_cascade_plans(r.dataset, CascadeLayout(plans=CASCADE_PLANS, coarse="2d_coarse", fine_3d="3d_fine"),
                            source_plans=BASE_PLANS, coarse_trainer=r.coarse_trainer)
    for spec in r.plans:
        if spec.source:  # refuses a different existing variant unless overwrite
            write_intensity_plans(r.dataset, spec.source, r.recipe.intensity, overwrite)
    status = {}
    for spec in r.plans:
        configs = sorted(spec.configurations, key=lambda c: c == "2d_coarse")  # fine stage first (cascade)
        status[spec.identifier] = (preprocess_configurations(r.dataset, spec.identifier, configs, num_processes)
                                   if preprocess else {c: "-" for c in configs})
    return status
