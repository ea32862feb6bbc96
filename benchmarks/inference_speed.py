"""Wall time per case on CPU: single model vs 2.5D ensemble vs coarse-to-fine cascade (phantom).

Prints, per pipeline, seconds per case and how the time splits into the networks (nnU-Net's
sliding-window inference), the rest of nnU-Net (model loading, preprocessing, resampling and
export) and nnunet-iph's own work (input listing, ensembling, hand-over between stages, volume
CSV). The target for our own share is < 10 %.

Speed does not depend on the weights, so the models are *untrained*: each architecture is built
from its plans by its trainer, randomly initialised and saved as an nnU-Net checkpoint (fold 0).
Everything else is the real thing: phantom -> converter -> our planners -> ``predict()``.

    OMP_NUM_THREADS=1 python benchmarks/inference_speed.py [--workdir W] [--cases 4] [--repeats 2] [--tta]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
from pathlib import Path

DATASET_ID, DATASET_NAME = 590, "IPHBench"
PLANES = ("axial", "coronal", "sagittal")


def setup(workdir: Path, n_cases: int, coarse_width: float) -> Path:
    """Phantom -> raw dataset -> plans (planes + cascade) -> untrained model folders. Idempotent."""
    from nnunet_iph.dataset_conversion.multisite import convert_multisite
    from nnunet_iph.phantom import PhantomConfig, generate_cohort
    from nnunet_iph.planning.cascade import CascadeLayout, write_cascade_plans
    from nnunet_iph.planning.common import plans_path
    from nnunet_iph.planning.planes import plan_planes

    raw = Path(os.environ["nnUNet_raw"]) / f"Dataset{DATASET_ID}_{DATASET_NAME}"
    if not (raw / "dataset.json").is_file():
        n_train = 6
        manifest = generate_cohort(workdir / "phantom", PhantomConfig(n_subjects=n_train + n_cases, n_sites=3,
                                                                      size="tiny", seed=7), progress=False)
        convert_multisite(manifest, DATASET_ID, DATASET_NAME, test_fraction=n_cases / (n_train + n_cases), seed=0,
                          num_folds=2, progress=False)
    if not plans_path(DATASET_ID, "nnUNetPlans_sagittal").is_file():
        plan_planes(DATASET_ID, num_processes=1)
    if not plans_path(DATASET_ID, "nnUNetPlans").is_file():
        import contextlib
        import io

        from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiment_dataset

        with contextlib.redirect_stdout(io.StringIO()):
            plan_experiment_dataset(DATASET_ID)
    write_cascade_plans(DATASET_ID, CascadeLayout(), coarse_trainer="nnUNetTrainerDenseNetCoarse",
                        coarse_arch_kwargs={"width": coarse_width})
    models = [("nnUNetTrainer", f"nnUNetPlans_{p}", "2d") for p in PLANES]
    models += [("nnUNetTrainer", "nnUNetPlans_cascade", "3d_fullres"),
               ("nnUNetTrainerDenseNetCoarse", "nnUNetPlans_cascade", "2d_coarse"),
               ("nnUNetTrainerCascadeFine", "nnUNetPlans_cascade", "3d_fine")]
    for trainer, plans, config in models:
        untrained_model(trainer, plans, config, raw)
    return raw


def untrained_model(trainer: str, plans: str, configuration: str, raw: Path) -> Path:
    """An nnU-Net model folder whose fold_0 checkpoint holds randomly initialised weights."""
    import torch
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    import nnunet_iph.trainers as trainers
    from nnunet_iph.planning.common import plans_path, results_dir

    folder = results_dir(DATASET_ID) / f"{trainer}__{plans}__{configuration}"
    plans_file = plans_path(DATASET_ID, plans)
    if (folder / "fold_0" / "checkpoint_final.pth").is_file() and \
            (folder / "plans.json").read_text(encoding="utf-8") == plans_file.read_text(encoding="utf-8"):
        return folder
    (folder / "fold_0").mkdir(parents=True, exist_ok=True)
    shutil.copy(plans_file, folder / "plans.json")
    shutil.copy(raw / "dataset.json", folder / "dataset.json")
    dataset_json = json.loads((raw / "dataset.json").read_text(encoding="utf-8"))
    pm = PlansManager(str(plans_file))
    cm = pm.get_configuration(configuration)
    if trainer == "nnUNetTrainer":
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer as cls
    else:
        cls = getattr(trainers, trainer)
    net = cls.build_network_architecture(pm, cm, determine_num_input_channels(pm, cm, dataset_json),
                                         pm.get_label_manager(dataset_json).num_segmentation_heads, False)
    torch.save({"network_weights": net.state_dict(), "trainer_name": trainer,
                "init_args": {"configuration": configuration},
                "inference_allowed_mirroring_axes": tuple(range(len(cm.patch_size)))},
               folder / "fold_0" / "checkpoint_final.pth")
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="/tmp/nnunet_iph_bench_inference")
    ap.add_argument("--cases", type=int, default=4, help="test cases predicted per run")
    ap.add_argument("--repeats", type=int, default=2, help="runs per pipeline (the fastest is reported)")
    ap.add_argument("--tta", action="store_true", help="with nnU-Net's mirroring (default off)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--coarse-width", type=float, default=0.25,
                    help="width of the DenseNet coarse model (1.0 = reference size; default 0.25, as in the tests)")
    args = ap.parse_args()

    from nnunet_iph.environment import apply_nnunet_env

    workdir = Path(args.workdir).resolve()
    apply_nnunet_env(workdir)
    os.environ.setdefault("nnUNet_def_n_proc", "1")
    import torch

    torch.set_num_threads(args.threads)
    from nnunet_iph.ensembling.ensemble import ModelRef
    from nnunet_iph.inference.predict import PredictSettings, predict
    from nnunet_iph.planning.common import results_dir

    raw = setup(workdir, args.cases, args.coarse_width)
    res = results_dir(DATASET_ID)
    ref = lambda tr, p, c: ModelRef(res / f"{tr}__{p}__{c}")  # noqa: E731
    pipelines = {
        "single 2D (axial)": ("single", [ref("nnUNetTrainer", "nnUNetPlans_axial", "2d")]),
        "single 3D (3d_fullres)": ("single", [ref("nnUNetTrainer", "nnUNetPlans_cascade", "3d_fullres")]),
        "2.5D (3 planes)": ("planes", [ref("nnUNetTrainer", f"nnUNetPlans_{p}", "2d") for p in PLANES]),
        "cascade (2D DenseNet -> 3D)": ("cascade", [ref("nnUNetTrainerCascadeFine", "nnUNetPlans_cascade", "3d_fine")]),
    }
    settings = PredictSettings(device="cpu", folds=(0,), tta=args.tta)
    rows = []
    import contextlib
    import io

    for label, (pipeline, models) in pipelines.items():
        runs = []
        for r in range(args.repeats):
            out = workdir / "pred" / pipeline / str(r)
            shutil.rmtree(out, ignore_errors=True)
            with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net prints per case
                runs.append(predict(raw / "imagesTs", out, pipeline, models, settings).timing)
        best = min(runs, key=lambda t: t.total_s)
        s = best.summary()
        s["nnunet_other_s"] = round(best.nnunet_s - best.network_s, 3)
        s["own_s"] = round(best.total_s - best.nnunet_s, 3)
        s["all_runs_per_case_s"] = [round(t.total_s / max(t.cases, 1), 3) for t in runs]
        rows.append({"pipeline": label, **s})

    print(f"\ninference on CPU ({args.threads} torch thread(s), TTA {'on' if args.tta else 'off'}), "
          f"{rows[0]['cases']} tiny phantom cases, untrained weights, best of {args.repeats}; "
          f"DenseNet coarse width {args.coarse_width}")
    head = (f"{'pipeline':30s} {'s/case':>7s} {'network':>8s} {'nnU-Net':>8s} {'ours':>6s} {'outside nets':>13s} "
            f"{'ours %':>7s}")
    print(head + "\n" + "-" * len(head))
    for r in rows:
        n = max(r["cases"], 1)
        print(f"{r['pipeline']:30s} {r['per_case_s']:7.2f} {r['network_s'] / n:8.2f} {r['nnunet_other_s'] / n:8.2f} "
              f"{r['own_s'] / n:6.3f} {100 * r['outside_network_share']:12.1f}% {100 * r['own_overhead_share']:6.1f}%")
    print("columns: seconds per case inside the networks / in the rest of nnU-Net (loading, preprocessing, "
          "export) / in nnunet-iph's own code; shares of the total")
    (workdir / "inference_speed.json").write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=2))
    print(f"details: {workdir / 'inference_speed.json'}  (median of all runs: "
          f"{[statistics.median(r['all_runs_per_case_s']) for r in rows]})")


if __name__ == "__main__":
    main()
