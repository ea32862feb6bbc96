"""Inference on a brain crop vs the whole field of view, on real head CTs (PhysioNet CT-ICH).

The same model runs twice through the real CLI (``nnunet-iph predict``, CPU, no TTA) on the same
scans: once on the full image, once with ``--brain-crop`` (crop to the intracranial mask's bounding
box + margin, masks pasted back). Per scan it reports the crop's share of the voxels, and for the two
runs the wall time per scan (``pipeline.json`` ``total_s``, which includes model loading once, and the
network time), the speed-up and the fraction of voxels inside the intracranial mask on which the two
masks agree (plus that fraction for the foreground voxels of either mask).

The model: nnU-Net's default 2D U-Net for a phantom dataset's plans, randomly initialised (seed 0;
built by ``benchmarks/dicom_roundtrip.py``) -- speed does not depend on the weights. By default its
plans are moved to head-CT resolution (the first scan's in-plane spacing, a 256 x 256 patch: several
tiles per 512 x 512 slice, as for any patch smaller than the slice); ``--native-patch 0`` keeps the
tiny phantom's plans (3.4 mm, 64 x 64: one tile per slice, full or cropped, so nothing to save). A
random network's argmax is near chance everywhere, so the masks differ wherever the tiles and the
network's strides meet the anatomy at other offsets (and, for the other scans, where the resampled
grid shifts); the voxel-for-voxel identity is tested with a pointwise model in
tests/inference/test_crop.py.

    OMP_NUM_THREADS=2 python benchmarks/brain_crop_speed.py [--cases 049 052 066] [--margin 10] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dicom_roundtrip import PHYSIONET, predict_cli, setup_model  # noqa: E402


def native_model(model: Path, spacing: float, patch: int) -> Path:
    """The same network and weights with head-CT-like 2D plans: in-plane ``spacing`` (mm) and a ``patch``
    smaller than a 512 x 512 slice, so the sliding window needs several tiles per slice (the tiny
    phantom's plans -- 3.4 mm, 64 x 64 -- fit a whole slice into one tile, and a crop cannot save any)."""
    folder = model.parent / model.name.replace("__nnUNetPlans__", "__nnUNetPlansNative__")
    shutil.copytree(model, folder, dirs_exist_ok=True)
    plans = json.loads((model / "plans.json").read_text(encoding="utf-8"))
    plans["plans_name"] = "nnUNetPlansNative"
    plans["configurations"]["2d"] |= {"spacing": [spacing, spacing], "patch_size": [patch, patch]}
    (folder / "plans.json").write_text(json.dumps(plans, indent=1), encoding="utf-8")
    return folder


def agreement(case: str, full_out: Path, crop_out: Path, ct: Path) -> dict:
    import SimpleITK as sitk

    from nnunet_iph.brain.extraction import intracranial_mask

    brain = sitk.GetArrayFromImage(intracranial_mask(sitk.ReadImage(str(ct))).mask) > 0
    a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(o / f"{case}.nii.gz"))) for o in (full_out, crop_out))
    inside = brain & ((a > 0) | (b > 0))
    return {"brain_voxels": int(brain.sum()), "agree_in_brain": round(float((a == b)[brain].mean()), 6),
            "agree_in_brain_foreground": round(float((a == b)[inside].mean()), 6) if inside.any() else None,
            "foreground_share_full": round(float((a > 0)[brain].mean()), 4),
            "differ_outside_brain": int(((a != b) & ~brain).sum())}


def run(cases: list[str], workdir: Path, data: Path, margin: float, patch: int | None) -> dict:
    from nnunet_iph.environment import apply_nnunet_env

    apply_nnunet_env(workdir / "nnunet")
    model = setup_model(workdir)
    if patch:  # on the first scan's in-plane spacing: that scan is not resampled
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(data / "ct_scans" / f"{cases[0]}.nii.gz"))
        reader.ReadImageInformation()
        model = native_model(model, reader.GetSpacing()[0], patch)
    inp = workdir / "in"
    shutil.rmtree(inp, ignore_errors=True)
    inp.mkdir(parents=True)
    for case in cases:
        (inp / f"{case}_0000.nii.gz").symlink_to(data / "ct_scans" / f"{case}.nii.gz")
    report: dict = {"cases": cases, "model": str(model), "margin_mm": margin,
                    "threads": os.environ.get("OMP_NUM_THREADS"), "load_avg_before": os.getloadavg()}
    outs = {"full": workdir / "out_full", "crop": workdir / "out_crop"}
    for name, extra in (("full", ()), ("crop", ("--brain-crop", str(margin)))):
        shutil.rmtree(outs[name], ignore_errors=True)
        t = time.perf_counter()
        proc = predict_cli(inp, outs[name], model, "--no-qc", *extra)
        if proc.returncode != 0:
            sys.exit(f"{name} run failed:\n{proc.stderr[-3000:]}")
        timing = json.loads((outs[name] / "pipeline.json").read_text(encoding="utf-8"))["timing"]
        report[name] = {"cli_s": round(time.perf_counter() - t, 2), **timing}
    crops = json.loads((outs["crop"] / "pipeline.json").read_text(encoding="utf-8"))["brain_crop"]["cases"]
    report["per_case"] = {c: {"voxel_share": crops[c].get("voxel_share"), "cropped": crops[c]["cropped"],
                              **agreement(c, outs["full"], outs["crop"], data / "ct_scans" / f"{c}.nii.gz")}
                          for c in cases}
    full, crop = report["full"], report["crop"]
    report["speedup_per_case"] = round(full["per_case_s"] / crop["per_case_s"], 3)
    report["speedup_network"] = round(full["network_s"] / max(crop["network_s"], 1e-9), 3)
    brain = sum(v["brain_voxels"] for v in report["per_case"].values())
    report["agree_in_brain_pooled"] = round(sum(v["agree_in_brain"] * v["brain_voxels"]
                                                for v in report["per_case"].values()) / brain, 6)
    report["load_avg_after"] = os.getloadavg()
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["049", "052", "066"])
    ap.add_argument("--margin", type=float, default=10.0)
    ap.add_argument("--native-patch", type=int, default=256, metavar="PX",
                    help="2D plans at the scans' spacing with this patch size (0: the tiny phantom's own plans)")
    ap.add_argument("--data", type=Path, default=PHYSIONET)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/nnunet_iph_bench_brain_crop"))
    ap.add_argument("--json", type=Path, help="also write the report here")
    args = ap.parse_args()
    if not (args.data / "ct_scans").is_dir():
        sys.exit(f"PhysioNet CT-ICH not found at {args.data}")
    report = run(args.cases, args.workdir, args.data, args.margin, args.native_patch)
    text = json.dumps(report, indent=1, default=str)
    print(text)
    print(f"speed-up per scan {report['speedup_per_case']}x (network {report['speedup_network']}x); "
          f"agreement inside the brain {report['agree_in_brain_pooled']}")
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
