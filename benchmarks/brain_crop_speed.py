"""Inference on a brain crop vs the whole field of view, on real head CTs (PhysioNet CT-ICH).

The same model runs through the real CLI (``nnunet-iph predict``, CPU, no TTA) once per scan on the full
image and once per ``--margin`` with ``--brain-crop`` (crop to the intracranial mask's bounding box +
margin, masks pasted back), so every time is that scan's own (``pipeline.json`` ``total_s``, model
loading included, and the network time). Per scan and margin: the crop's voxel share, the speed-up, the
fraction of voxels inside the intracranial mask where the two masks agree, the Dice between the two
masks and the hemorrhage volume (mL) of each. ``--shift-control`` also segments the scan less its first
(air) column: the tiles stay where they were, only nnU-Net's resampled grid samples the anatomy a
fraction of a voxel elsewhere -- how much that alone changes the masks.

The model: ``--model-folder DIR``, a trained nnU-Net model folder (``plans.json``, ``dataset.json``,
``fold_0/checkpoint_final.pth``; copied under the workdir, nothing is written next to it). Without it:
nnU-Net's default 2D U-Net for a phantom dataset's plans, randomly initialised (seed 0; built by
``benchmarks/dicom_roundtrip.py``), its plans moved to the first scan's in-plane spacing with a 256 x 256
patch (``--native-patch 0``: the tiny phantom's own plans) -- for speed only, its argmax is near chance.

Measured (docs/brain-extraction.md, "Inference on a brain crop"): with the trained CPU-protocol
baseline (Dataset610, 2D, 2 mm, 64 x 64 patch; scans 053 073 081 082 084, its fold-0 validation cases)
the crop is 1.11x faster per scan in total (0.70-1.67x) and the masks are NOT identical inside the brain
(Dice between them 0.0-0.77 at 10 mm; 40 mm does not fix it): nnU-Net resamples the crop on its own
grid and tiles it at other offsets. The voxel-for-voxel identity holds for a pointwise model on the
plans' own spacing (tests/inference/test_crop.py).

    OMP_NUM_THREADS=2 python benchmarks/brain_crop_speed.py --model-folder DIR --cases 053 073 081 082 084 \
        [--margin 10 40] [--shift-control] [--json F]
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


def trained_model(folder: Path, workdir: Path) -> Path:
    """A copy of a trained model folder (plans, dataset.json, fold_0's final checkpoint) under ``workdir``,
    so that nothing is ever written next to the original (a training may still run there)."""
    ckpt = folder / "fold_0" / "checkpoint_final.pth"
    if not ckpt.is_file():
        sys.exit(f"{ckpt}: not found (training not finished?)")
    copy = workdir / "model" / folder.parent.name / folder.name
    (copy / "fold_0").mkdir(parents=True, exist_ok=True)
    for name in ("plans.json", "dataset.json"):
        shutil.copyfile(folder / name, copy / name)
    shutil.copyfile(ckpt, copy / "fold_0" / "checkpoint_final.pth")
    return copy


def agreement(full: Path, crop: Path, brain) -> dict:
    """Crop mask vs full mask: agreement inside the brain, Dice of the foregrounds, hemorrhage volumes."""
    import SimpleITK as sitk

    img = sitk.ReadImage(str(full))
    a, b = sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(sitk.ReadImage(str(crop)))
    ml = float(np.prod(img.GetSpacing())) / 1000.0
    inside = brain & ((a > 0) | (b > 0))
    both = int(((a > 0) & (b > 0)).sum())
    n = int((a > 0).sum() + (b > 0).sum())
    return {"agree_in_brain": round(float((a == b)[brain].mean()), 6),
            "differ_in_brain": int((a != b)[brain].sum()),
            "agree_in_brain_foreground": round(float((a == b)[inside].mean()), 6) if inside.any() else None,
            "dice_full_vs_crop": round(2 * both / n, 6) if n else None,
            "ml_full": round(float((a > 0).sum()) * ml, 3), "ml_crop": round(float((b > 0).sum()) * ml, 3),
            "differ_outside_brain": int(((a != b) & ~brain).sum())}


def _timed_run(inp: Path, out: Path, model: Path, *extra: str) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    proc = predict_cli(inp, out, model, "--no-qc", *extra)
    if proc.returncode != 0:
        sys.exit(f"{out.name} run failed:\n{proc.stderr[-3000:]}")
    info = json.loads((out / "pipeline.json").read_text(encoding="utf-8"))
    return {"cli_s": round(time.perf_counter() - t, 2), **info["timing"], "brain_crop": info["brain_crop"]}


def run(cases: list[str], workdir: Path, data: Path, margins: list[float], patch: int | None,
        model_folder: Path | None, shift_control: bool = False) -> dict:
    """Per scan (one CLI run each, so every time is that scan's own): the full run, then one crop run
    per margin; ``shift_control``: also the full image less its first column (air), which moves only
    where nnU-Net's resampled grid samples the scan (a fraction of a voxel), not the tiles."""
    import SimpleITK as sitk

    from nnunet_iph.brain.extraction import intracranial_mask
    from nnunet_iph.environment import apply_nnunet_env

    apply_nnunet_env(workdir / "nnunet")
    if model_folder is not None:
        model = trained_model(model_folder, workdir)
    else:
        model = setup_model(workdir)
        if patch:  # on the first scan's in-plane spacing: that scan is not resampled
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(data / "ct_scans" / f"{cases[0]}.nii.gz"))
            reader.ReadImageInformation()
            model = native_model(model, reader.GetSpacing()[0], patch)
    report: dict = {"cases": cases, "model": str(model_folder or model), "margins_mm": margins,
                    "threads": os.environ.get("OMP_NUM_THREADS"), "load_avg_before": os.getloadavg(),
                    "per_case": {}}
    for case in cases:
        ct = data / "ct_scans" / f"{case}.nii.gz"
        inp = workdir / "in" / case
        shutil.rmtree(inp, ignore_errors=True)
        inp.mkdir(parents=True)
        (inp / f"{case}_0000.nii.gz").symlink_to(ct)
        brain = sitk.GetArrayFromImage(intracranial_mask(sitk.ReadImage(str(ct))).mask) > 0
        full = _timed_run(inp, workdir / "out" / case / "full", model)
        row = {"brain_voxels": int(brain.sum()), "full_s": full["total_s"], "full_network_s": full["network_s"]}
        for m in margins:
            out = workdir / "out" / case / f"crop_{m:g}"
            crop = _timed_run(inp, out, model, "--brain-crop", str(m))
            box = crop["brain_crop"]["cases"][case]
            row[f"margin_{m:g}"] = {
                "voxel_share": box.get("voxel_share"), "crop_s": crop["total_s"], "crop_network_s": crop["network_s"],
                "speedup": round(full["total_s"] / crop["total_s"], 3),
                "speedup_network": round(full["network_s"] / max(crop["network_s"], 1e-9), 3),
                **agreement(workdir / "out" / case / "full" / f"{case}.nii.gz", out / f"{case}.nii.gz", brain)}
        if shift_control:  # the full image less its first (air) column: same tiles, resampling grid shifted
            img = sitk.ReadImage(str(ct))
            size = img.GetSize()
            sinp = workdir / "in" / f"{case}_shift"
            shutil.rmtree(sinp, ignore_errors=True)
            sinp.mkdir(parents=True)
            sitk.WriteImage(sitk.RegionOfInterest(img, (size[0] - 1, *size[1:]), (1, 0, 0)),
                            str(sinp / f"{case}_0000.nii.gz"))
            sout = workdir / "out" / case / "shift1"
            _timed_run(sinp, sout, model)
            shifted = sitk.ReadImage(str(sout / f"{case}.nii.gz"))
            padded = np.zeros(size[::-1], np.uint8)
            padded[..., 1:] = sitk.GetArrayFromImage(shifted)
            pimg = sitk.GetImageFromArray(padded)
            pimg.CopyInformation(img)
            sitk.WriteImage(pimg, str(sout / "padded.nii.gz"))
            row["shift_1_voxel"] = agreement(workdir / "out" / case / "full" / f"{case}.nii.gz",
                                             sout / "padded.nii.gz", brain)
        report["per_case"][case] = row
        print(json.dumps({case: row}), flush=True)
    rows = report["per_case"].values()
    brain = sum(r["brain_voxels"] for r in rows)
    for m in margins:
        k = f"margin_{m:g}"
        report[k] = {"speedup_total": round(sum(r["full_s"] for r in rows) / sum(r[k]["crop_s"] for r in rows), 3),
                     "agree_in_brain_pooled": round(sum(r[k]["agree_in_brain"] * r["brain_voxels"]
                                                        for r in rows) / brain, 6)}
    report["load_avg_after"] = os.getloadavg()
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["049", "052", "066"])
    ap.add_argument("--margin", type=float, nargs="+", default=[10.0], help="crop margin(s), mm: one crop run each")
    ap.add_argument("--native-patch", type=int, default=256, metavar="PX",
                    help="2D plans at the scans' spacing with this patch size (0: the tiny phantom's own plans)")
    ap.add_argument("--model-folder", type=Path, metavar="DIR",
                    help="a trained nnU-Net model folder (plans.json, dataset.json, fold_0/checkpoint_final.pth), "
                         "copied under the workdir; default: the random-weight phantom model")
    ap.add_argument("--shift-control", action="store_true",
                    help="also segment each scan less its first column: how much a sub-voxel shift of the "
                         "resampled grid alone changes the masks")
    ap.add_argument("--data", type=Path, default=PHYSIONET)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/nnunet_iph_bench_brain_crop"))
    ap.add_argument("--json", type=Path, help="also write the report here")
    args = ap.parse_args()
    if not (args.data / "ct_scans").is_dir():
        sys.exit(f"PhysioNet CT-ICH not found at {args.data}")
    report = run(args.cases, args.workdir, args.data, args.margin, args.native_patch, args.model_folder,
                 args.shift_control)
    text = json.dumps(report, indent=1, default=str)
    print(text)
    for m in args.margin:
        r = report[f"margin_{m:g}"]
        print(f"margin {m:g} mm: speed-up {r['speedup_total']}x; agreement inside the brain "
              f"{r['agree_in_brain_pooled']}")
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
