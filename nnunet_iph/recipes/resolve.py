"""A recipe applied to one dataset: every plans id, trainer name, training task and command, as data.

Pure (no nnU-Net, no torch): ``recipe.json``, ``experiment.toml``, ``commands.sh`` and ``--run`` are
all rendered from the one :class:`Resolved` this module builds, so they cannot disagree.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from nnunet_iph.planning.intensity import DEFAULT_PROTOCOL, get_protocol, variant_plans_name
from nnunet_iph.recipes.table import ModelGroup, Recipe

SCHEDULE = re.compile(r"^\d+ep_\d+it(_noTTA)?$")
BASE_PLANS = "nnUNetPlans"
CASCADE_PLANS = "nnUNetPlans_cascade"


@dataclass(frozen=True)
class PlansSpec:
    """A plans file the recipe writes: ``kind`` plane | default | cascade, ``source`` what it derives from."""
    identifier: str
    kind: str
    configurations: tuple[str, ...]
    plane: str | None = None
    source: str | None = None  # the plans the intensity variant is made from (None: written directly)


@dataclass(frozen=True)
class Model:
    group: str
    trainer: str
    plans: str
    configuration: str

    @property
    def identifier(self) -> str:
        return f"{self.trainer}__{self.plans}__{self.configuration}"


@dataclass
class Resolved:
    recipe: Recipe
    dataset: str  # DatasetNNN_Name
    dataset_id: int
    folds: list[int]
    schedule: str | None
    out_dir: Path
    raw: Path
    preprocessed: Path
    results: Path
    brain: dict[str, Any]
    plans: list[PlansSpec]
    models: list[Model]
    has_test_images: bool
    command_line: list[str] = field(default_factory=list)

    @property
    def plans_prefix(self) -> str:
        """Prefix of the plane plans (``nnUNetPlans`` or ``nnUNetPlans_<protocol>``)."""
        intensity = self.recipe.intensity
        return BASE_PLANS if intensity == DEFAULT_PROTOCOL else f"{BASE_PLANS}_{intensity}"

    def group_models(self, group: ModelGroup) -> list[Model]:
        return [m for m in self.models if m.group == group.name]

    @property
    def coarse_trainer(self) -> str | None:
        coarse = [m.trainer for m in self.models if m.configuration == "2d_coarse"]
        return coarse[0] if coarse else None


def brain_status(recipe: Recipe, dataset_json: dict) -> dict[str, Any]:
    """How the recipe handles the skull: stripped at conversion, restriction of predictions, or not at all."""
    record = (dataset_json.get("nnunet_iph") or {}).get("brain_mask") if isinstance(dataset_json, dict) else None
    if not recipe.brain:
        return {"mode": "none", "note": "the study did not strip the skull; neither does the recipe"}
    if record:
        return {"mode": "converted", "record": record,
                "note": "the dataset was converted with --brain-mask: its CTs are skull-stripped by nnunet-iph's "
                        "extraction (dataset.json nnunet_iph.brain_mask), as the study stripped the skull before "
                        "training; nnunet-iph predict strips new inputs the same way"}
    return {"mode": "restrict", "warning": True,
            "note": "the dataset was not converted with --brain-mask, so the CTs keep the skull; the recipe "
                    "restricts predictions to the intracranial mask instead (choose-postprocessing / postprocess "
                    "--restrict-to-brain on cross-validation and test predictions, predict --restrict-to-brain); "
                    "convert with --brain-mask to train on skull-stripped CTs as the study did"}


def resolve(recipe: Recipe, dataset: str, dataset_json: dict, raw: Path, preprocessed: Path, results: Path,
            out_dir: Path,
            folds: Sequence[int] = (0, 1, 2, 3, 4), schedule: str | None = None,
            has_test_images: bool = False, command_line: Sequence[str] = ()) -> Resolved:
    if schedule is not None and not SCHEDULE.match(schedule):
        raise ValueError(f"--schedule {schedule!r}: expected <E>ep_<I>it or <E>ep_<I>it_noTTA, e.g. 2ep_5it")
    folds = sorted(set(int(f) for f in folds))
    if not folds or folds[0] < 0:
        raise ValueError(f"--folds must be fold numbers >= 0, got {list(folds)}")
    protocol = get_protocol(recipe.intensity)
    channels = (dataset_json.get("channel_names") or dataset_json.get("modality") or {})
    if protocol.windows and len(channels) != protocol.num_channels:
        raise ValueError(f"{raw / 'dataset.json'}: recipe {recipe.name} windows {protocol.num_channels} CT channel(s) "
                         f"(intensity protocol {protocol.name}), the dataset has {len(channels)}")
    plans: list[PlansSpec] = []

    def plans_for(kind: str, configurations: tuple[str, ...]) -> list[str]:
        """Identifiers of the plans a group trains on, registered in ``plans`` once."""
        if kind == "planes":
            wanted = [(f"{BASE_PLANS}_{plane}", plane) for plane in recipe.planes]
        elif kind == "default":
            wanted = [(BASE_PLANS, None)]
        elif kind == "cascade":
            wanted = [(CASCADE_PLANS, None)]
        else:
            raise ValueError(f"recipe {recipe.name}: unknown plans kind {kind!r}")
        ids = []
        for base, plane in wanted:
            ident, source = base, None
            if protocol.windows:
                ident, source = variant_plans_name(base, protocol.name, plane), base
            existing = next((p for p in plans if p.identifier == ident), None)
            merged = tuple(dict.fromkeys([*(existing.configurations if existing else ()), *configurations]))
            spec = PlansSpec(ident, "plane" if plane else kind, merged, plane, source)
            plans[:] = [spec if p.identifier == ident else p for p in plans] if existing else [*plans, spec]
            ids.append(ident)
        return ids

    models: list[Model] = []
    for group in recipe.groups:
        for plans_id in plans_for(group.plans, group.configurations):
            for trainer in group.trainers:
                for configuration in group.configurations:
                    models.append(Model(group.name, f"{trainer}_{schedule}" if schedule else trainer, plans_id,
                                        configuration))
    return Resolved(recipe, dataset, int(dataset[len("Dataset"):len("Dataset") + 3]), folds, schedule,
                    out_dir.resolve(), raw, preprocessed, results, brain_status(recipe, dataset_json), plans, models,
                    has_test_images, list(command_line))


# --------------------------------------------------------------------------- commands

def _cmd(*parts: Any) -> str:
    return " ".join(shlex.quote(str(p)) for p in parts)


def preprocess_commands(r: Resolved, num_processes: int = 2) -> list[str]:
    """What preprocesses the recipe's plans by hand (``nnunet-iph recipe`` itself does it unless --no-preprocess);
    the cascade's fine stage first, so the coarse stage's validation can export for it."""
    out = []
    for spec in r.plans:
        configs = sorted(spec.configurations, key=lambda c: c == "2d_coarse")
        out.append(_cmd("nnUNetv2_preprocess", "-d", r.dataset_id, "-plans_name", spec.identifier, "-c", *configs,
                        "-np", *[num_processes] * len(configs)))
    return out


def train_command(r: Resolved, m: Model, fold: int, device: str | None = None) -> str:
    extra = ["-device", device] if device else []
    return _cmd("nnUNetv2_train", r.dataset, m.configuration, fold, "-tr", m.trainer, "-p", m.plans, *extra, "--npz")


def predictions_dir(r: Resolved, group: ModelGroup) -> Path:
    """Test-set predictions of a group: ``<model>/`` per model and ``ensemble/`` (as ``slurm`` writes them)."""
    return r.out_dir / "predictions" / group.name


def cv_commands(r: Resolved) -> list[str]:
    """After training: 2.5D ensembles of the cross-validation and, in ``restrict`` mode, brain restriction
    chosen on it (``choose-postprocessing`` keeps it only where it helps)."""
    out: list[str] = []
    restrict = r.brain["mode"] == "restrict"
    for group in r.recipe.groups:
        models = r.group_models(group)
        cv: list[tuple[str, Path, bool]] = []  # (name, folder, covers only some cases)
        if group.ensemble_planes:
            for trainer in dict.fromkeys(m.trainer for m in models):
                folder = r.out_dir / "cv" / f"{trainer}__2.5D"
                out.append(_cmd("nnunet-iph", "ensemble", "cv", "-d", r.dataset, "--planes", "-tr", trainer, "-p",
                                r.plans_prefix, "-c", group.configurations[0], "-f", *r.folds, "-o", folder))
                cv.append((folder.name, folder, False))
        elif restrict:
            cv += [(f"{m.identifier}_fold_{f}", r.results / m.identifier / f"fold_{f}" / "validation", True)
                   for m in models for f in r.folds]
        if restrict:
            out += [_cmd("nnunet-iph", "choose-postprocessing", r.preprocessed / "gt_segmentations", folder, "-o",
                         r.out_dir / "postprocessing" / name, "--images", r.raw / "imagesTr",
                         *(["--subset"] if subset else [])) for name, folder, subset in cv]
    return out


def test_predict_commands(r: Resolved) -> list[str]:
    """``nnUNetv2_predict`` of every model on imagesTs, 2.5D ``nnUNetv2_ensemble`` of the planes."""
    out: list[str] = []
    for group in r.recipe.groups:
        target = predictions_dir(r, group)
        members = r.group_models(group)
        for m in members:
            prev: list[Any] = []
            if m.configuration == "3d_fine":
                coarse = next(x for x in r.models if x.configuration == "2d_coarse")
                prev = ["-prev_stage_predictions", r.out_dir / "predictions" / coarse.group / coarse.identifier]
            out.append(_cmd("nnUNetv2_predict", "-i", r.raw / "imagesTs", "-o", target / m.identifier, "-d",
                            r.dataset, "-tr", m.trainer, "-p", m.plans, "-c", m.configuration, "-f", *r.folds,
                            "--save_probabilities", *prev))
        if group.ensemble_planes:
            out.append(_cmd("nnUNetv2_ensemble", "-i", *[target / m.identifier for m in members], "-o",
                            target / "ensemble"))
    return out


def test_restrict_commands(r: Resolved) -> list[str]:
    """``restrict`` mode: the final test predictions of each group restricted to the brain (``<folder>_brain``)."""
    if r.brain["mode"] != "restrict":
        return []
    out = []
    for group in r.recipe.groups:
        target = predictions_dir(r, group)
        finals = [target / "ensemble"] if group.ensemble_planes else [target / m.identifier
                                                                      for m in r.group_models(group)]
        out += [_cmd("nnunet-iph", "postprocess", f, f"{f}_brain", "--restrict-to-brain", "--images",
                     r.raw / "imagesTs") for f in finals]
    return out
