"""Protocol files: parsing, validation messages, the training runs they expand to (pure Python, fast)."""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path

import pytest

from nnunet_iph.benchmarking.protocol import build_protocol, load_protocol

REPO = Path(__file__).resolve().parents[2]
CPU = REPO / "benchmarks" / "ctich" / "cpu.toml"
GPU = REPO / "benchmarks" / "ctich" / "gpu.toml"


def minimal(**over) -> dict:
    raw = {"name": "t", "kind": "cpu", "dataset_id": 700, "dataset_name": "T",
           "data": {"negatives": 2, "folds": 3, "eval_folds": [0], "tuning_fold": 1},
           "plan": {"spacing_mm": 4.0, "batch_size": 2, "features_per_stage": [4, 8, 16], "max_patch": 32,
                    "arch_kwargs": {"width": 0.125}},
           "schedule": {"epochs": 2, "iterations": 3},
           "model": [{"name": "base", "trainer": "nnUNetTrainer", "baseline": True},
                     {"name": "fpn", "trainer": "nnUNetTrainerFPN", "arch": True},
                     {"name": "fd 2.5D", "trainer": "nnUNetTrainerFocalDice", "planes": ["axial", "coronal", "sagittal"]},
                     {"name": "fd", "trainer": "nnUNetTrainerFocalDice"}]}
    raw.update(over)
    return raw


def test_shipped_cpu_protocol_same_budget_for_every_model():
    p = load_protocol(CPU)
    assert p.kind == "cpu" and p.baseline.trainer == "nnUNetTrainer"
    assert p.tuning_fold not in p.eval_folds
    runs = p.runs()
    # every run: the same schedule suffix and the same plans family / configuration data
    suffix = p.scheduled("")
    assert all(r.trainer.endswith(suffix) for r in runs)
    assert f"_{p.epochs}ep_{p.iterations}it" in runs[0].trainer
    assert {p.plan.configuration, p.plan.arch_configuration} >= {r.configuration for r in runs}
    names = [m.name for m in p.models]
    assert names[0] == "nnU-Net" and {"focal+Dice", "FPN", "Attention U-Net", "focal+Dice 2.5D"} <= set(names)
    # the 2.5D ensembles reuse their axial models, restricted rows their unrestricted training:
    # 10 trainings for 10 models
    assert len(runs) == 10 and len(p.models) == 10
    midl = next(m for m in p.models if m.name == "MIDL recipe: FPN 2.5D")
    assert midl.intensity == "midl2026" and midl.restrict_to_brain and "_fg100" in midl.trainer
    assert [r.plans for r in p.member_runs(midl, 0)] == [f"nnUNetPlans_midl2026_{q}" for q in
                                                        ("axial", "coronal", "sagittal")]


def test_shipped_gpu_protocol_lists_the_reference_grid():
    p = load_protocol(GPU)
    assert p.kind == "gpu" and p.epochs is None and p.experiment.name == "gpu_experiment.toml"
    assert p.eval_folds == (0, 1, 2, 3, 4) and p.negatives is None
    trainers = {r.trainer for r in p.runs()}
    assert {"nnUNetTrainer", "nnUNetTrainerVGG16UNet", "nnUNetTrainerAttentionUNet", "nnUNetTrainerFPN",
            "nnUNetTrainerTransUNet", "nnUNetTrainerSwinUNet", "nnUNetTrainerCascadeFine"} <= trainers
    assert {r.plans for r in p.runs()} >= {"nnUNetPlans_axial", "nnUNetPlans_coronal", "nnUNetPlans_sagittal"}


def test_runs_deduplicate_the_ensemble_members_and_name_the_schedule():
    p = build_protocol(minimal())
    ids = [r.model for r in p.runs()]
    assert ids == ["nnUNetTrainer_2ep_3it__nnUNetPlans_axial__2d_cpu",
                   "nnUNetTrainerFPN_2ep_3it__nnUNetPlans_axial__2d_cpu_arch",
                   "nnUNetTrainerFocalDice_2ep_3it__nnUNetPlans_axial__2d_cpu",
                   "nnUNetTrainerFocalDice_2ep_3it__nnUNetPlans_coronal__2d_cpu",
                   "nnUNetTrainerFocalDice_2ep_3it__nnUNetPlans_sagittal__2d_cpu"]
    assert p.planes() == ["axial", "coronal", "sagittal"]
    assert p.dataset == "Dataset700_T"


def test_intensity_rows_train_on_their_own_plans_and_restricted_rows_share_a_training():
    raw = minimal()
    raw["model"] += [{"name": "fpn brain", "trainer": "nnUNetTrainerFPN", "arch": True, "restrict_to_brain": True},
                     {"name": "midl 2.5D", "trainer": "nnUNetTrainerFPN", "arch": True, "intensity": "midl2026",
                      "planes": ["axial", "coronal", "sagittal"]}]
    p = build_protocol(raw)
    fpn, brain, midl = (next(m for m in p.models if m.name == n) for n in ("fpn", "fpn brain", "midl 2.5D"))
    assert p.member_runs(fpn, 0) == p.member_runs(brain, 0) and brain.restrict_to_brain
    assert [r.plans for r in p.member_runs(midl, 0)] == ["nnUNetPlans_midl2026_axial", "nnUNetPlans_midl2026_coronal",
                                                        "nnUNetPlans_midl2026_sagittal"]
    assert p.intensity_plans() == {f"nnUNetPlans_midl2026_{q}": (q, "midl2026") for q in ("axial", "coronal", "sagittal")}
    assert len(p.runs()) == len(build_protocol(minimal()).runs()) + 3


def test_schedule_without_tta_names_the_no_tta_variant():
    raw = minimal()
    raw["schedule"]["tta"] = False
    p = build_protocol(raw)
    assert {r.trainer for r in p.runs()} == {"nnUNetTrainer_2ep_3it_noTTA", "nnUNetTrainerFPN_2ep_3it_noTTA",
                                             "nnUNetTrainerFocalDice_2ep_3it_noTTA"}
    assert build_protocol(minimal()).scheduled("nnUNetTrainer") == "nnUNetTrainer_2ep_3it"


@pytest.mark.parametrize("change, message", [
    (lambda r: r["data"].update(tuning_fold=0), "tuning_fold 0 is an evaluation fold"),
    (lambda r: r["data"].update(eval_folds=[3]), "eval_folds must be fold numbers 0..2"),
    (lambda r: r["data"].update(negatives=-1), "negatives must be an integer >= 0"),
    (lambda r: r.update(colour="red"), "unknown key(s) ['colour']"),
    (lambda r: r["plan"].update(max_patch=30), "max_patch 30 is not a multiple of the total stride 4"),
    (lambda r: r["model"][1].update(baseline=True), "exactly one [[model]] must have baseline = true"),
    (lambda r: r["model"][1].update(planes=["axial", "axial"]), "planes must be distinct"),
    (lambda r: r["model"][1].update(name="base"), "model names must be unique"),
    (lambda r: r.pop("schedule"), "needs a [schedule]"),
    (lambda r: r["schedule"].pop("iterations"), "needs both epochs and iterations"),
    (lambda r: r["schedule"].update(tta="no"), "tta must be true or false"),
    (lambda r: r["model"].append({"name": "x"}), "'trainer' (a string) is required"),
    (lambda r: r["model"][1].update(intensity="soft"), "intensity 'soft' is not a protocol"),
    (lambda r: r["model"][1].update(restrict_to_brain="yes"), "restrict_to_brain must be true or false"),
    (lambda r: r["model"][1].update(intensity="blastct", plans="P"), "give 'plans' or 'intensity', not both"),
    (lambda r: (r["model"][1].update(restrict_to_brain=True), r["data"].update(eval_folds=[0, 2], tuning_fold=1)),
     "score one fold's predictions: give one eval fold"),
])
def test_invalid_protocols_name_the_file_and_the_problem(change, message, tmp_path):
    raw = deepcopy(minimal())
    change(raw)
    with pytest.raises(ValueError) as err:
        build_protocol(raw, source=tmp_path / "p.toml")
    assert message in str(err.value) and str(tmp_path / "p.toml") in str(err.value)


def test_bad_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [", encoding="utf-8")
    with pytest.raises(ValueError, match="invalid TOML"):
        load_protocol(bad)
    with pytest.raises(FileNotFoundError, match="protocol file not found"):
        load_protocol(tmp_path / "none.toml")


def test_model_and_fold_selection_keeps_the_baseline():
    from nnunet_iph.commands.benchmark import select

    p = select(minimal(), ["fpn"], [2], Path("p.toml"))
    assert [m.name for m in p.models] == ["base", "fpn"] and p.eval_folds == (2,)
    with pytest.raises(ValueError, match="no model"):
        select(minimal(), ["nope"], None, Path("p.toml"))
    with pytest.raises(ValueError, match="tuning_fold 1 is an evaluation fold"):
        select(minimal(), None, [1], Path("p.toml"))


def test_only_ensemble_members_export_probabilities(tmp_path):
    from nnunet_iph.benchmarking.ctich import train_command
    from nnunet_iph.benchmarking.workspace import resume_flag

    p = build_protocol(minimal())
    members = p.ensemble_member_runs()
    assert {r.plans for r in members} == {"nnUNetPlans_axial", "nnUNetPlans_coronal", "nnUNetPlans_sagittal"}
    assert {r.trainer for r in members} == {"nnUNetTrainerFocalDice_2ep_3it"}
    runs = {r.model: r for r in p.runs()}
    base = train_command(p, runs["nnUNetTrainer_2ep_3it__nnUNetPlans_axial__2d_cpu"], tmp_path)
    fd = train_command(p, runs["nnUNetTrainerFocalDice_2ep_3it__nnUNetPlans_axial__2d_cpu"], tmp_path)
    assert "--npz" not in base and "--npz" in fd and "--c" not in fd
    assert base[1:3] == ["-m", "nnunet_iph.benchmarking.nnunet_train"] and base[3:6] == ["Dataset700_T", "2d_cpu", "0"]
    (tmp_path / "checkpoint_latest.pth").write_bytes(b"")
    assert resume_flag(tmp_path) == ["--c"]


def test_thread_cap():
    from nnunet_iph.benchmarking.nnunet_train import capped_threads

    assert capped_threads(2, 0) == 2 and capped_threads(2, 1) == 1 and capped_threads(1, 4) == 1


def test_training_seed_moves_augmentation_into_the_training_process(tmp_path, monkeypatch):
    from nnunet_iph.benchmarking.runtime import runtime_env, training_env
    from nnunet_iph.benchmarking.workspace import Workspace

    monkeypatch.delenv("NNUNET_IPH_TORCH_THREADS", raising=False)
    monkeypatch.delenv("nnUNet_n_proc_DA", raising=False)
    plain_protocol = build_protocol(minimal())
    plain = training_env(plain_protocol, runtime_env(plain_protocol, Workspace(tmp_path)))
    assert "NNUNET_IPH_SEED" not in plain and plain["NNUNET_IPH_TORCH_THREADS"] == "0"
    protocol = build_protocol(minimal(runtime={"training_seed": 3, "torch_threads": 1}))
    base = runtime_env(protocol, Workspace(tmp_path))
    # planning and preprocessing keep augmentation workers (nnU-Net's planner sets torch threads from them)
    assert base["nnUNet_n_proc_DA"] == "2" and "NNUNET_IPH_SEED" not in base
    seeded = training_env(protocol, base)
    assert seeded["NNUNET_IPH_SEED"] == "3" and seeded["nnUNet_n_proc_DA"] == "0"
    assert seeded["NNUNET_IPH_TORCH_THREADS"] == "1" and seeded["nnUNet_raw"].startswith(str(tmp_path))


def test_workdir_inside_the_repository_is_refused(tmp_path):
    from nnunet_iph.benchmarking.workspace import check_workdir

    with pytest.raises(ValueError, match="inside the repository"):
        check_workdir(REPO / "results")
    assert check_workdir(tmp_path).root == tmp_path.resolve()
