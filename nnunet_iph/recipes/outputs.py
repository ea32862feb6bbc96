"""What ``nnunet-iph recipe`` writes into ``-o DIR``: recipe.json, experiment.toml, commands.sh, README.md.

Everything is rendered from one :class:`~nnunet_iph.recipes.resolve.Resolved`. A second run with the
same recipe rewrites identical files; different existing outputs are refused unless ``overwrite``
(their experiment may be queued or half-trained), so a folder never mixes two recipes.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from nnunet_iph import __version__
from nnunet_iph.recipes.resolve import (Resolved, cv_commands, predictions_dir, preprocess_commands,
                                        test_predict_commands, test_restrict_commands, train_command)

FILES = ("recipe.json", "experiment.toml", "commands.sh", "README.md")
GPU_RESOURCES = {"gpus": 1, "cpus_per_task": 8, "mem": "64G", "time": "2-00:00:00", "max_parallel": 20}
JOB_RESOURCES = {"gpus": 0, "cpus_per_task": 4, "mem": "32G", "time": "06:00:00"}


def recipe_record(r: Resolved) -> dict[str, Any]:
    """recipe.json: everything resolved (the ``command_line`` aside, identical for identical recipes)."""
    from nnunet_iph.planning.intensity import get_protocol

    proto = get_protocol(r.recipe.intensity)
    return {
        "recipe": r.recipe.name, "title": r.recipe.title, "paper": r.recipe.paper,
        "nnunet_iph_version": __version__, "command_line": r.command_line,
        "dataset": r.dataset, "folds": r.folds, "schedule": r.schedule,
        "intensity": {"protocol": proto.name, "description": proto.description},
        "brain": r.brain,
        "plans": [{"identifier": s.identifier, "kind": s.kind, "plane": s.plane, "derived_from": s.source,
                   "configurations": list(s.configurations)} for s in r.plans],
        "train": [{"stage": g.name, "trainers": list(dict.fromkeys(m.trainer for m in r.group_models(g))),
                   "plans": list(dict.fromkeys(m.plans for m in r.group_models(g))),
                   "configurations": list(g.configurations), "folds": r.folds, "after": list(g.after),
                   "ensemble": "2.5D (planes averaged per trainer)" if g.ensemble_planes else None}
                  for g in r.recipe.groups],
        "models": [m.identifier for m in r.models],
        "differences_from_paper": list(r.recipe.differences),
        "commands": {"preprocess": preprocess_commands(r),
                     "train": [train_command(r, m, f) for m in r.models for f in r.folds],
                     "cross_validation": cv_commands(r),
                     "test": [*test_predict_commands(r), *test_restrict_commands(r)]},
    }


def experiment(r: Resolved, device: str = "cuda", resources: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``nnunet-iph slurm`` experiment (as a dict) for the recipe's whole grid."""
    exp: dict[str, Any] = {"name": f"recipe-{r.recipe.name}", "dataset": r.dataset, "device": device,
                           "env": {"nnUNet_compile": "t" if device == "cuda" else "f"},
                           "resources": dict(resources or GPU_RESOURCES), "train": [], "predict": []}
    for g in r.recipe.groups:
        models = r.group_models(g)
        exp["train"].append({"name": g.name, "trainers": list(dict.fromkeys(m.trainer for m in models)),
                             "plans": list(dict.fromkeys(m.plans for m in models)),
                             "configurations": list(g.configurations), "folds": r.folds, "npz": True,
                             "after": list(g.after)})
        if r.has_test_images:
            entry = {"name": f"test_{g.name}", "models": g.name, "input": str(r.raw / "imagesTs"),
                     "output": str(predictions_dir(r, g)), "save_probabilities": True,
                     "ensemble": g.ensemble_planes and len(models) > 1}
            entry.update({"prev_stage": f"test_{a}" for a in g.after})
            exp["predict"].append(entry)
    after = cv_commands(r) + test_restrict_commands(r)
    if after:
        waits = [g.name for g in r.recipe.groups] + [
            f"test_{g.name}_ensemble" if g.ensemble_planes and len(r.group_models(g)) > 1 else f"test_{g.name}"
            for g in r.recipe.groups if r.has_test_images]
        exp["job"] = [{"name": "after_training", "after": waits, "command": " && ".join(after),
                       "resources": dict(JOB_RESOURCES)}]
    return {k: v for k, v in exp.items() if v != []}


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))  # a JSON string is a valid TOML basic string


def to_toml(exp: dict[str, Any], header: str) -> str:
    """TOML of an experiment dict: scalars, ``[table]``s and ``[[array]]``s of tables with ``[x.resources]``."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    scalars = {k: v for k, v in exp.items() if not isinstance(v, (dict, list))}
    lines += [f"{k} = {_toml_value(v)}" for k, v in scalars.items()]
    for key, value in exp.items():
        if isinstance(value, dict):
            lines += ["", f"[{key}]", *[f"{k} = {_toml_value(v)}" for k, v in value.items()]]
        elif isinstance(value, list):
            for entry in value:
                lines += ["", f"[[{key}]]", *[f"{k} = {_toml_value(v)}" for k, v in entry.items()
                                              if not isinstance(v, dict)]]
                for sub, table in ((k, v) for k, v in entry.items() if isinstance(v, dict)):
                    lines += [f"[{key}.{sub}]", *[f"{k} = {_toml_value(v)}" for k, v in table.items()]]
    return "\n".join(lines) + "\n"


def commands_sh(r: Resolved) -> str:
    q = shlex.quote
    rec = recipe_record(r)
    lines = ["#!/bin/bash", f"# nnunet-iph recipe {r.recipe.name} on {r.dataset} (nnunet-iph {__version__}): the "
             "commands by hand.", "# Needs nnUNet_raw / nnUNet_preprocessed / nnUNet_results exported (nnunet-iph env "
             "--workdir W); on a machine without a GPU add -device cpu to nnUNetv2_train / nnUNetv2_predict.",
             "set -euo pipefail", 'eval "$(nnunet-iph env)"  # nnUNet_extTrainer: nnunet-iph\'s trainers', "",
             "# 1. plans (nnunet-iph recipe writes them into nnUNet_preprocessed) and their preprocessing",
             " ".join(q(a) for a in ["nnunet-iph", "recipe", r.recipe.name, "-d", r.dataset, "-o", str(r.out_dir),
                                     "--folds", *map(str, r.folds), *(["--schedule", r.schedule] if r.schedule
                                                                     else []), "--no-preprocess"]),
             *rec["commands"]["preprocess"], "",
             "# 2. training, in this order (a cascade's fine stage needs every fold of the coarse stage);",
             "#    add --c to resume an interrupted run", *rec["commands"]["train"]]
    if rec["commands"]["cross_validation"]:
        lines += ["", "# 3. cross-validation: 2.5D ensembles / restriction to the brain", *rec["commands"]["cross_validation"]]
    if rec["commands"]["test"]:
        lines += ["", "# 4. test set (imagesTs)", *rec["commands"]["test"]]
    return "\n".join(lines) + "\n"


def readme(r: Resolved) -> str:
    rec = recipe_record(r)
    n_train = len(rec["commands"]["train"])
    lines = [f"# Recipe `{r.recipe.name}` on {r.dataset}", "", r.recipe.title + ".", "",
             f"- paper: {r.recipe.paper}", f"- intensity: {rec['intensity']['protocol']} "
             f"({rec['intensity']['description']})", f"- skull: {r.brain['note']}",
             f"- plans: {', '.join(s.identifier for s in r.plans)}",
             f"- trainings: {n_train} ({len(r.models)} models x {len(r.folds)} folds: {r.folds})"
             + (f", schedule suffix _{r.schedule}" if r.schedule else ""), "", "## Models", ""]
    lines += [f"- `{m.identifier}`" for m in r.models]
    lines += ["", "## Where it differs from the paper", "", *[f"- {d}" for d in r.recipe.differences], "",
              "## Files", "", "- `recipe.json`: everything resolved (plans, trainers, folds, commands, version)",
              "- `experiment.toml`: the grid on a GPU cluster: `nnunet-iph slurm submit experiment.toml -o slurm`",
              "- `commands.sh`: the same steps by hand (nnUNetv2_preprocess / train / predict / ensemble)",
              f"- `nnunet-iph recipe {r.recipe.name} -d {r.dataset} -o {r.out_dir} --run`: every step on this "
              "machine, in order, resumable", "", "See docs/recipes.md of nnunet-iph."]
    return "\n".join(lines) + "\n"


def render(r: Resolved) -> dict[str, str]:
    header = (f"nnunet-iph recipe {r.recipe.name}: the full grid as a `nnunet-iph slurm` experiment.\n"
              "nnU-Net folders come from the environment: eval \"$(nnunet-iph env --workdir W)\".\n"
              "Set partition / account (and setup = [\"module load ...\"]) for your cluster.")
    return {"recipe.json": json.dumps(recipe_record(r), indent=2) + "\n",
            "experiment.toml": to_toml(experiment(r), header), "commands.sh": commands_sh(r),
            "README.md": readme(r)}


def _same_recipe(old_text: str, new_text: str) -> bool:
    try:
        old = json.loads(old_text)
    except ValueError:
        return False
    new = json.loads(new_text)
    return {k: v for k, v in old.items() if k != "command_line"} == {k: v for k, v in new.items()
                                                                      if k != "command_line"}


def check_outputs(out_dir: Path, files: dict[str, str], overwrite: bool) -> None:
    """Refuse existing outputs of a different recipe (or edited by hand) unless ``overwrite``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"-o {out_dir}: an existing file, not a folder")
    if overwrite:
        return
    changed = []
    for name, text in files.items():
        path = out_dir / name
        if not path.is_file():
            continue
        old = path.read_text(encoding="utf-8", errors="replace")
        if not (_same_recipe(old, text) if name == "recipe.json" else old == text):
            changed.append(name)
    if changed:
        raise ValueError(f"{out_dir}: {', '.join(changed)} exist with different content (another recipe, dataset, "
                         "folds or schedule?); pass --overwrite to replace them, or choose another -o")


def write_outputs(out_dir: Path, files: dict[str, str]) -> list[Path]:
    from nnunet_iph.imageio import write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    written = [write_text(text, out_dir / name) for name, text in files.items()]
    (out_dir / "commands.sh").chmod((out_dir / "commands.sh").stat().st_mode | 0o111)
    return written
