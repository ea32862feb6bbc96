"""PhysioNet CT-ICH benchmark: convert, plan, train, predict, evaluate and analyse every model of a protocol.

Why one pipeline: the comparison with plain nnU-Net only means something if every model sees the
same cases, plan, spacing, patch, batch and iterations, and is scored the same way. Each stage here
calls the package's own machinery (``convert physionet``, plane plans, nnU-Net training, the 2.5D
ensemble, ``analyze``); this module only fixes the order, the settings and the bookkeeping.

The work folder's layout: :mod:`.workspace`; the environment of the runs: :mod:`.runtime`.
Every step is skipped when its outputs exist; trainings resume from nnU-Net's checkpoints (``--c``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

from nnunet_iph.benchmarking.gpu import gpu_steps
from nnunet_iph.benchmarking.protocol import Protocol
from nnunet_iph.benchmarking.report import write_results
from nnunet_iph.benchmarking.runtime import machine_info, memory_cap, runtime_env, training_env
from nnunet_iph.benchmarking.steps import Step, StepRunner
from nnunet_iph.benchmarking.workspace import attempt_log, check_workdir, resume_flag, training_done
from nnunet_iph.cluster.experiment import TrainTask
from nnunet_iph.imageio import write_csv

# --------------------------------------------------------------------------------------------
# training

def train_command(protocol: Protocol, run: TrainTask, folder: Path) -> list[str]:
    """nnU-Net's training entry point (thread cap, see nnunet_train); ``--npz`` only for ensemble members
    (exporting full-size probabilities costs ~20 s per validation case on a CPU)."""
    return [sys.executable, "-m", "nnunet_iph.benchmarking.nnunet_train", protocol.dataset, run.configuration,
            str(run.fold), "-tr", run.trainer, "-p", run.plans, "-device", protocol.device,
            *(["--npz"] if run in protocol.ensemble_member_runs() else []), *resume_flag(folder)]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


# --------------------------------------------------------------------------------------------
# the pipeline

class CTICHBenchmark:
    def __init__(self, protocol: Protocol, workdir: str | os.PathLike, data: str | os.PathLike | None = None,
                 progress: bool = True, log: Callable[[str], None] = print):
        self.protocol = protocol
        self.ws = check_workdir(workdir)
        self.data = Path(data).expanduser().resolve() if data else None
        self.progress = progress
        self.log = log
        self.env = runtime_env(protocol, self.ws)

    # -- helpers -----------------------------------------------------------------------------
    @property
    def raw(self) -> Path:
        return self.ws.raw(self.protocol.dataset)

    @property
    def preprocessed(self) -> Path:
        return self.ws.preprocessed(self.protocol.dataset)

    @property
    def results_dataset(self) -> Path:
        return self.ws.results_dataset(self.protocol.dataset)

    def apply_env(self) -> None:
        """Export the environment in this process too (nnU-Net reads its folders at import time)."""
        os.environ.update(self.env)

    def _run_logged(self, args: list[str], stem: str, env: dict[str, str] | None = None) -> Path:
        from nnunet_iph.nnunet_cli import run_logged

        self.ws.logs.mkdir(parents=True, exist_ok=True)
        log = attempt_log(self.ws.logs, stem)
        run_logged(args, log, env=env or self.env)
        return log

    # -- data --------------------------------------------------------------------------------
    def _selection_matches(self) -> bool:
        sel = self.ws.source / "selection.json"
        if not sel.is_file():
            return False
        rec = json.loads(sel.read_text(encoding="utf-8"))
        wanted = "all" if self.protocol.negatives is None else self.protocol.negatives
        wanted_pos = "all" if self.protocol.positives is None else self.protocol.positives
        same_source = self.data is None or rec.get("source") == str(self.data)
        return (rec.get("negatives_requested") == wanted and rec.get("positives_requested", "all") == wanted_pos
                and rec.get("seed") == self.protocol.seed and same_source)

    def step_subset(self) -> Step:
        def run() -> dict:
            from nnunet_iph.benchmarking.subset import make_subset

            if self.data is None:
                raise ValueError("--data (the PhysioNet CT-ICH release folder) is needed for the first run")
            rec = make_subset(self.data, self.ws.source, self.protocol.negatives, self.protocol.seed,
                              self.protocol.positives)
            return {k: rec[k] for k in ("n_positive", "n_negative", "n_total")}

        return Step("select cases", run, self._selection_matches, [self.ws.source / "selection.json"])

    def _converted(self) -> bool:
        ds = self.raw / "dataset.json"
        sel = self.ws.source / "selection.json"
        if not ds.is_file() or not sel.is_file() or not (self.preprocessed / "splits_final.json").is_file():
            return False
        n = json.loads(sel.read_text(encoding="utf-8"))["n_total"]
        return json.loads(ds.read_text(encoding="utf-8")).get("numTraining") == n

    def step_convert(self) -> Step:
        def run() -> dict:
            from nnunet_iph.dataset_conversion import convert_physionet, install_splits

            raw = convert_physionet(self.ws.source, self.protocol.dataset_id, self.protocol.dataset_name,
                                    self.ws.nnunet / "nnUNet_raw", num_folds=self.protocol.folds,
                                    seed=self.protocol.seed, progress=self.progress)
            install_splits(raw, self.ws.nnunet / "nnUNet_preprocessed")
            return {"raw": str(raw)}

        return Step("convert (nnunet-iph convert physionet)", run, self._converted, [self.raw / "dataset.json"])

    # -- plans -------------------------------------------------------------------------------
    def plane_plans_files(self) -> dict[str, Path]:
        """``{plane: file}`` of the plane plans (nnU-Net's normalisation), the source of every variant."""
        prefix = self.protocol.plan.plans_prefix if self.protocol.plan else "nnUNetPlans"
        return {p: self.preprocessed / f"{prefix}_{p}.json" for p in self.protocol.planes()}

    def plans_files(self) -> dict[str, Path]:
        """``{plans id: file}`` of every plans file a model trains on: plane plans and intensity variants."""
        files = {path.stem: path for path in self.plane_plans_files().values()}
        files.update({pid: self.preprocessed / f"{pid}.json" for pid in self.protocol.intensity_plans()})
        return files

    def step_plan_planes(self) -> Step:
        def run() -> dict:
            from nnunet_iph.planning.planes import plan_planes

            prefix = self.protocol.plan.plans_prefix if self.protocol.plan else "nnUNetPlans"
            files = plan_planes(self.protocol.dataset, self.protocol.planes(), prefix,
                                num_processes=self.protocol.num_processes)
            return {p: str(f) for p, f in files.items()}

        files = self.plane_plans_files()
        return Step("plan planes (nnunet-iph plan --planes)", run, lambda: all(f.is_file() for f in files.values()),
                    list(files.values()))

    def _intensity_variant(self, plans_id: str) -> dict:
        from nnunet_iph.planning.intensity import with_intensity_protocol

        plane, protocol = self.protocol.intensity_plans()[plans_id]
        base = json.loads(self.plane_plans_files()[plane].read_text(encoding="utf-8"))
        channels = json.loads((self.raw / "dataset.json").read_text(encoding="utf-8"))["channel_names"]
        return json.loads(json.dumps(with_intensity_protocol(base, protocol, channels, plans_name=plans_id)))

    def _intensity_current(self) -> bool:
        files = self.plans_files()
        return all(files[pid].is_file() and json.loads(files[pid].read_text(encoding="utf-8"))
                   == self._intensity_variant(pid) for pid in self.protocol.intensity_plans())

    def step_intensity_plans(self) -> Step:
        """Variants of the plane plans (after the CPU configuration, so the variant carries it too)."""
        def run() -> dict:
            from nnunet_iph.planning.common import save_plans

            for pid in self.protocol.intensity_plans():
                save_plans(self._intensity_variant(pid), self.plans_files()[pid])
            return {pid: protocol for pid, (_, protocol) in self.protocol.intensity_plans().items()}

        return Step("intensity protocol plans (planning.intensity)", run, self._intensity_current,
                    [self.plans_files()[pid] for pid in self.protocol.intensity_plans()])

    def _configured(self) -> bool:
        from nnunet_iph.benchmarking.cpu_config import add_cpu_configurations

        for path in self.plane_plans_files().values():
            if not path.is_file():
                return False
            _, changed = add_cpu_configurations(json.loads(path.read_text(encoding="utf-8")), self.protocol.plan)
            if changed:
                return False
        return True

    def step_configure(self) -> Step:
        def run() -> dict:
            from nnunet_iph.benchmarking.cpu_config import add_cpu_configurations
            from nnunet_iph.planning.common import save_plans

            out = {}
            for plane, path in self.plane_plans_files().items():
                plans, changed = add_cpu_configurations(json.loads(path.read_text(encoding="utf-8")),
                                                        self.protocol.plan)
                if changed:
                    save_plans(plans, path)
                cfg = plans["configurations"][self.protocol.plan.configuration]
                out[plane] = {k: cfg[k] for k in ("spacing", "patch_size", "batch_size", "data_identifier")}
            return out

        return Step(f"add configuration {self.protocol.plan.configuration}", run, self._configured,
                    list(self.plane_plans_files().values()))

    def _preprocessed_ok(self, plans_id: str) -> bool:
        from nnunet_iph.planning.common import PREPROCESSING_STAMP, _config_stamp, preprocessed_complete

        path = self.plans_files()[plans_id]
        if not path.is_file():
            return False
        plans = json.loads(path.read_text(encoding="utf-8"))
        cfg = plans["configurations"].get(self.protocol.plan.configuration)
        if cfg is None:
            return False
        stamp_file = self.preprocessed / PREPROCESSING_STAMP
        stamps = json.loads(stamp_file.read_text(encoding="utf-8")) if stamp_file.is_file() else {}
        cases = [p.name[: -len("_0000.nii.gz")] for p in (self.raw / "imagesTr").glob("*_0000.nii.gz")]
        return (stamps.get(cfg["data_identifier"]) == _config_stamp(plans, self.protocol.plan.configuration)
                and preprocessed_complete(self.preprocessed / cfg["data_identifier"], cases))

    def step_preprocess(self, plans_id: str) -> Step:
        def run() -> dict:
            from nnunet_iph.planning.common import preprocess_configurations

            return preprocess_configurations(self.protocol.dataset, plans_id, [self.protocol.plan.configuration],
                                             self.protocol.num_processes)

        return Step(f"preprocess {plans_id} {self.protocol.plan.configuration}", run,
                    lambda: self._preprocessed_ok(plans_id))

    # -- training ----------------------------------------------------------------------------
    def step_train(self, run: TrainTask) -> Step:
        folder = self.ws.fold_dir(self.protocol.dataset, run)

        def execute() -> dict:
            from nnunet_iph.benchmarking.training_logs import fold_training_summary

            cmd = train_command(self.protocol, run, folder)
            self.log("  $ " + " ".join(cmd[2:]) + f"  (NNUNET_IPH_TORCH_THREADS={self.env.get('NNUNET_IPH_TORCH_THREADS')})")
            log = self._run_logged(cmd, _safe(f"train_{run.model}_fold{run.fold}"),
                                   training_env(self.protocol, self.env))
            info = fold_training_summary(folder, self.protocol.iterations)
            info["log"] = str(log)
            info["resumed"] = "--c" in cmd
            return info

        return Step(run.step_name, execute, lambda: training_done(folder),
                    [folder / "checkpoint_final.pth", folder / "validation" / "summary.json"])

    # -- ensembles ---------------------------------------------------------------------------
    def ensemble_folder(self, model) -> Path:
        from nnunet_iph.ensembling.ensemble import ModelRef, ensemble_name

        refs = [ModelRef(self.results_dataset / r.model) for r in self.protocol.member_runs(model, 0)]
        return self.results_dataset / "ensembles" / ensemble_name(refs, list(self.protocol.eval_folds))

    def step_ensemble(self, model) -> Step:
        out = self.ensemble_folder(model)

        def run() -> dict:
            from nnunet_iph.ensembling.ensemble import ModelRef, ensemble_crossvalidation

            refs = [ModelRef(self.results_dataset / r.model) for r in self.protocol.member_runs(model, 0)]
            folder = ensemble_crossvalidation(refs, out, folds=list(self.protocol.eval_folds), require_planes=True,
                                              num_processes=self.protocol.num_processes)
            summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
            return {"folder": str(folder), "dice_nnunet": summary.get("foreground_mean", {}).get("Dice")}

        return Step(f"ensemble {model.name} (nnunet-iph ensemble cv --planes)", run,
                    lambda: (out / "summary.json").is_file() and (out / "ensemble.json").is_file(),
                    [out / "summary.json"])

    # -- brain restriction -------------------------------------------------------------------
    @property
    def brain_masks_dir(self) -> Path:
        return self.ws.root / "brain_masks"

    def _brain_masks_done(self) -> bool:
        import pandas as pd

        csv = self.brain_masks_dir / "brain_masks.csv"
        if not csv.is_file():
            return False
        cases = {p.name[: -len("_0000.nii.gz")] for p in (self.raw / "imagesTr").glob("*_0000.nii.gz")}
        done = set(pd.read_csv(csv, dtype={"case": str})["case"])
        return cases <= done and all((self.brain_masks_dir / f"{c}.nii.gz").is_file() for c in cases)

    def step_brain_masks(self) -> Step:
        def run() -> dict:
            from nnunet_iph.brain.folder import brain_masks

            cases = {p.name[: -len("_0000.nii.gz")]: p for p in sorted((self.raw / "imagesTr").glob("*_0000.nii.gz"))}
            table = brain_masks(cases, self.brain_masks_dir, num_workers=self.protocol.num_processes,
                                progress=self.progress)
            warned = table[table["warnings"].fillna("") != ""]["case"].tolist() if "warnings" in table else []
            return {"cases": len(table), "passed_through_or_warned": warned}

        return Step("brain masks of every case (nnunet-iph brain-mask)", run, self._brain_masks_done,
                    [self.brain_masks_dir / "brain_masks.csv"])

    def unrestricted_folder(self, model) -> Path:
        """The folder of ``model``'s validation predictions (one eval fold) as nnU-Net / the ensemble wrote it."""
        if model.is_ensemble:
            return self.ensemble_folder(model)
        (run,) = self.protocol.member_runs(model, self.protocol.eval_folds[0])
        return self.ws.fold_dir(self.protocol.dataset, run) / "validation"

    def restricted_folder(self, model) -> Path:
        return self.results_dataset / "brain_restricted" / _safe(model.name)

    def step_restrict(self, model) -> Step:
        from nnunet_iph.benchmarking.restriction import restrict_predictions, restricted_current

        source, out = self.unrestricted_folder(model), self.restricted_folder(model)
        return Step(f"restrict {model.name} to the brain (postprocess --restrict-to-brain)",
                    lambda: restrict_predictions(source, out, self.brain_masks_dir,
                                                 self.preprocessed / "gt_segmentations", ".nii.gz"),
                    lambda: restricted_current(source, out, self.brain_masks_dir, ".nii.gz"), [out])

    # -- analysis ----------------------------------------------------------------------------
    def model_keys(self) -> dict[tuple[str, str, str], str]:
        """(trainer, plans, configuration) as the analysis names a system -> the protocol's model name;
        a brain-restricted row's plans carry ``+brain`` (it shares its training with another row)."""
        keys = {}
        for model in self.protocol.models:
            runs = self.protocol.member_runs(model, 0)
            plans = "+".join(r.plans for r in runs) + ("+brain" if model.restrict_to_brain else "")
            keys[(runs[0].trainer, plans, "+".join(dict.fromkeys(r.configuration for r in runs)))] = model.name
        return keys

    def analysis_sources(self) -> list:
        """One prediction source per model (and eval fold): nnU-Net's, the ensemble's or the restricted copy."""
        from dataclasses import replace

        from nnunet_iph.analysis import collect as C

        ens_fold = "ensemble_" + "_".join(str(f) for f in self.protocol.eval_folds)
        found: dict[tuple[str, str, str], list] = {}  # every eval fold's folder (an ensemble: one for all)
        for s in C.discover_sources(self.results_dataset, self.protocol.dataset,
                                    [str(f) for f in self.protocol.eval_folds]):
            if not s.fold.startswith("ensemble") or s.fold == ens_fold:
                found.setdefault((s.model, s.plans, s.configuration), []).append(s)
        sources, missing = [], []
        for key, name in self.model_keys().items():
            model = next(m for m in self.protocol.models if m.name == name)
            plain_key = (key[0], key[1].removesuffix("+brain"), key[2])
            if plain_key not in found:
                missing.append(name)
            elif model.restrict_to_brain:  # one folder: the protocol allows it with one eval fold only
                sources.append(replace(found[plain_key][0], pred_dir=self.restricted_folder(model), plans=key[1]))
            else:
                sources.extend(found[plain_key])
        if missing:
            raise FileNotFoundError(f"{self.results_dataset}: no validation predictions for {missing}")
        return sources

    def _analysis_current(self, out: Path) -> bool:
        """The analysis exists, covers exactly the protocol's models and is newer than every prediction
        it scored (a model added to the protocol, or re-trained, is analysed again, never reported stale)."""
        import pandas as pd

        from nnunet_iph.benchmarking.results import MODEL_COL

        per_case = self.ws.results / "per_case.csv"
        if not per_case.is_file() or not (out / "report.md").is_file():
            return False
        if set(pd.read_csv(per_case, usecols=[MODEL_COL])[MODEL_COL]) != {m.name for m in self.protocol.models}:
            return False
        try:
            sources = self.analysis_sources()
        except FileNotFoundError:
            return False
        newest = max((p.stat().st_mtime for s in sources for p in s.pred_dir.glob(f"*{s.file_ending}")), default=0.0)
        return per_case.stat().st_mtime >= newest

    def step_analyze(self) -> Step:
        out = self.ws.results / "analysis"

        def run() -> dict:
            import pandas as pd

            from nnunet_iph.analysis import collect as C
            from nnunet_iph.analysis.report import AnalysisSettings, build_report
            from nnunet_iph.benchmarking.results import MODEL_COL

            keys = self.model_keys()
            sources = self.analysis_sources()
            found = {keys[(s.model, s.plans, s.configuration)] for s in sources}
            with memory_cap(self.protocol.memory_limit_gb):
                collection = C.collect(sources, self.raw / "cases.csv", labels_dir=self.raw / "labelsTr",
                                       metric_source=self.protocol.metric_source, evaluate_kwargs={"num_workers": 1})
            table = collection.table
            table.insert(0, MODEL_COL, [keys[(m, p, c)] for m, p, c in
                                        zip(table["model"], table["plans"], table["configuration"])])
            # the report's systems and table columns carry the protocol's model names (two models may
            # share a trainer: focal+Dice and its 2.5D ensemble); the trainer stays in 'trainer'
            table.insert(1, "trainer", table["model"])
            table["model"] = table[MODEL_COL]
            table["system"] = table[MODEL_COL]
            table["row"] = "fold " + "+".join(str(f) for f in self.protocol.eval_folds)
            order = {m.name: i for i, m in enumerate(self.protocol.models)}
            table = table.sort_values([MODEL_COL, "case"], key=lambda s: s.map(order) if s.name == MODEL_COL else s)
            settings = AnalysisSettings(seed=self.protocol.seed, messages=list(collection.messages),
                                        images_dir=str(self.raw / "imagesTr"),
                                        title=f"PhysioNet CT-ICH benchmark ({self.protocol.name}): analysis")
            build_report(table, out, settings)
            write_csv(pd.DataFrame(table), self.ws.results / "per_case.csv")
            return {"n_rows": int(len(table)), "models": sorted(found)}

        return Step("evaluate + analyse (nnunet-iph analyze)", run, lambda: self._analysis_current(out),
                    [self.ws.results / "per_case.csv", out / "report.md"])

    def step_report(self, runner: StepRunner) -> Step:
        """Always rewritten (cheap, and it reports the wall times of this run too)."""
        written: list[bool] = []

        def run() -> dict:
            info = write_results(self, runner)
            written.append((self.ws.results / "README.md").is_file())
            return info

        return Step("results table + README", run, lambda: bool(written) and written[-1],
                    [self.ws.results / "README.md"])

    # -- orchestration -----------------------------------------------------------------------
    def preparation_steps(self) -> list[Step]:
        """Cases, conversion, plans (plane plans, CPU configuration, intensity variants), preprocessing."""
        steps = [self.step_subset(), self.step_convert(), self.step_plan_planes(), self.step_configure()]
        if self.protocol.intensity_plans():
            steps.append(self.step_intensity_plans())
        used = {r.plans for r in self.protocol.runs()}  # a plane plan may only be the source of a variant
        return steps + [self.step_preprocess(pid) for pid in self.plans_files() if pid in used]

    def restriction_steps(self) -> list[Step]:
        restricted = [m for m in self.protocol.models if m.restrict_to_brain]
        return [self.step_brain_masks(), *(self.step_restrict(m) for m in restricted)] if restricted else []

    def training_steps(self) -> list[Step]:
        return [self.step_train(r) for r in self.protocol.runs()]

    def cpu_steps(self) -> list[Step]:
        steps = self.preparation_steps()
        steps += self.training_steps()
        steps += [self.step_ensemble(m) for m in self.protocol.models if m.is_ensemble]
        steps += self.restriction_steps()
        steps.append(self.step_analyze())
        return steps

    def run(self, only_prepare: bool = False) -> dict[str, str]:
        """Run (or continue) the whole protocol; return each step's status."""
        self.ws.root.mkdir(parents=True, exist_ok=True)
        self.apply_env()
        runner = StepRunner(self.ws.state, progress=self.progress, log=self.log)
        runner.state.setdefault("runs", []).append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                                    "machine": machine_info(), "argv": sys.argv})
        runner.save()
        started = time.time()
        if self.protocol.kind == "gpu":
            steps = gpu_steps(self, only_prepare)
            analyse = any(s.name.startswith("evaluate") for s in steps)
        else:
            steps = self.cpu_steps()
            analyse = not only_prepare
            if only_prepare:
                steps = self.preparation_steps()
        if analyse:
            steps.append(self.step_report(runner))
        status = runner.run(steps)
        runner.state["runs"][-1]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        runner.state["runs"][-1]["wall_s"] = round(time.time() - started, 1)
        runner.save()
        return status

