"""DICOM input round trip on real head CTs (PhysioNet CT-ICH): same masks as from the NIfTI originals.

Each chosen scan is written as a CT DICOM series (pydicom + SimpleITK: Modality CT, stored
values with RescaleSlope/Intercept, ImagePositionPatient per slice from the NIfTI sform, so a
sheared sform -- patient 074's gantry tilt -- becomes a tilted series). The first case folder also
holds a localizer (single coronal slice, ImageType LOCALIZER) in a nested folder and a non-DICOM
file. Then ``nnunet-iph predict`` (the real CLI, one 2D model) runs on the NIfTI originals and on
the DICOM folders, and per case:

- the DICOM mask equals the NIfTI mask voxel for voxel (index axes aligned by orientation);
- its volume (volumes.csv) equals the NIfTI one;
- the DICOM-SEG read back (highdicom) equals the NIfTI mask of the DICOM run;
- a copy of one scan with a slice removed is refused (message naming the gap) and, with
  ``--dicom-irregular resample``, segmented with its mask on the source slices.

Speed: per-case wall time of the DICOM run and the share spent outside the network (DICOM
reading, staging, writing, DICOM-SEG), from ``pipeline.json``.

The model: nnU-Net's default 2D U-Net for a phantom dataset's plans, randomly initialised (seed
0) -- the identity check needs one fixed model, not a good one; its masks are not empty (the
foreground share is printed).

    OMP_NUM_THREADS=2 python benchmarks/dicom_roundtrip.py [--cases 049 074 075] [--workdir W] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PHYSIONET = REPO.parent / "shared" / "data" / "physionet-ct-ich"
DATASET_ID, DATASET_NAME = 592, "DicomBench"
UID_ROOT = "1.2.826.0.1.3680043.2.1125.592"


# --------------------------------------------------------------------------- writing DICOM from NIfTI

def sform_grid(nifti: Path) -> tuple[np.ndarray, tuple[float, float], tuple[float, ...], list[np.ndarray]]:
    """Voxels (z, y, x), PixelSpacing (x, y), ImageOrientationPatient and per-slice ImagePositionPatient
    from the NIfTI affine itself (nibabel: the sform, sheared or not), in DICOM's LPS."""
    import nibabel
    import SimpleITK as sitk

    img = nibabel.load(str(nifti))
    aff = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine  # RAS -> LPS
    ci, cj, ck, t = aff[:3, 0], aff[:3, 1], aff[:3, 2], aff[:3, 3]
    iop = tuple(float(v) for v in (*ci / np.linalg.norm(ci), *cj / np.linalg.norm(cj)))
    hu = sitk.GetArrayFromImage(sitk.ReadImage(str(nifti)))  # same voxel order as the file (z, y, x)
    positions = [t + k * ck for k in range(hu.shape[0])]
    return hu, (float(np.linalg.norm(ci)), float(np.linalg.norm(cj))), iop, positions


def write_case(nifti: Path, folder: Path, n: int, localizer: bool = False, drop_slice: int | None = None) -> str:
    """``nifti`` as a DICOM series under ``folder/series``; returns its SeriesInstanceUID."""
    from nnunet_iph.dicom.writer import SeriesTags, write_ct_series

    hu, spacing, iop, positions = sform_grid(nifti)
    if drop_slice is not None:
        hu = np.delete(hu, drop_slice, axis=0)
        positions = positions[:drop_slice] + positions[drop_slice + 1:]
    study = f"{UID_ROOT}.{n}"
    uid = f"{study}.2"
    write_ct_series(hu, folder / "series", SeriesTags(uid, study, description="HEAD 5mm", patient_id=f"P{n}"),
                    spacing, iop, positions)
    if localizer:  # a scout: one coronal slice through the middle, written first (series number 1)
        mid = hu[:, hu.shape[1] // 2, :][::-1][None]  # (1, z, x), top row = highest slice
        top = positions[-1] + (hu.shape[1] // 2) * np.array(iop[3:]) * spacing[1]
        write_ct_series(mid, folder / "scout" / "a", SeriesTags(f"{study}.1", study, description="SCOUT",
                                                               series_number=1, patient_id=f"P{n}",
                                                               image_type="ORIGINAL\\PRIMARY\\LOCALIZER"),
                        (spacing[0], 5.0), (*iop[:3], 0.0, 0.0, -1.0), [top])
        (folder / "README.txt").write_text("exported from PACS\n")
    return uid


# --------------------------------------------------------------------------- the model

def setup_model(workdir: Path) -> Path:
    """Phantom -> raw dataset -> nnU-Net plans -> a randomly initialised 2D model folder (fold 0)."""
    from nnunet_iph.dataset_conversion.multisite import convert_multisite
    from nnunet_iph.phantom import PhantomConfig, generate_cohort
    from nnunet_iph.planning.common import plans_path

    raw = Path(os.environ["nnUNet_raw"]) / f"Dataset{DATASET_ID}_{DATASET_NAME}"
    if not (raw / "dataset.json").is_file():
        manifest = generate_cohort(workdir / "phantom", PhantomConfig(n_subjects=6, n_sites=2, size="tiny", seed=3),
                                   progress=False)
        convert_multisite(manifest, DATASET_ID, DATASET_NAME, num_folds=2, progress=False)
    plans_file = plans_path(DATASET_ID, "nnUNetPlans")
    if not plans_file.is_file():
        import contextlib
        import io

        from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprints,
                                                                          plan_experiments)

        with contextlib.redirect_stdout(io.StringIO()):
            extract_fingerprints([DATASET_ID], num_processes=1)
            plan_experiments([DATASET_ID])
    return untrained_2d_model(plans_file, raw / "dataset.json", workdir / "models")


def untrained_2d_model(plans_file: Path, dataset_json: Path, parent: Path, seed: int = 0) -> Path:
    """``parent/nnUNetTrainer__<plans>__2d``: nnU-Net's 2D network for these plans, seeded random weights."""
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    folder = parent / f"nnUNetTrainer__{plans_file.stem}__2d"
    if (folder / "fold_0" / "checkpoint_final.pth").is_file():
        return folder
    (folder / "fold_0").mkdir(parents=True, exist_ok=True)
    shutil.copy(plans_file, folder / "plans.json")
    shutil.copy(dataset_json, folder / "dataset.json")
    ds = json.loads(dataset_json.read_text(encoding="utf-8"))
    pm = PlansManager(str(plans_file))
    cm = pm.get_configuration("2d")
    torch.manual_seed(seed)
    net = nnUNetTrainer.build_network_architecture(pm, cm, determine_num_input_channels(pm, cm, ds),
                                                   pm.get_label_manager(ds).num_segmentation_heads, False)
    torch.save({"network_weights": net.state_dict(), "trainer_name": "nnUNetTrainer",
                "init_args": {"configuration": "2d"}, "inference_allowed_mirroring_axes": (0, 1)},
               folder / "fold_0" / "checkpoint_final.pth")
    return folder


# --------------------------------------------------------------------------- running and comparing

def predict_cli(inp: Path, out: Path, model: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).parent / "nnunet-iph"), "predict", "-i", str(inp), "-o", str(out), "-m",
           str(model), "--device", "cpu", "--disable-tta", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=3600)


def oriented(path: Path) -> np.ndarray:
    """Voxels with the index axes put in one anatomical order (DICOM writes slices along the normal,
    which may run opposite to the NIfTI's k axis)."""
    import SimpleITK as sitk

    img = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(sitk.DICOMOrient(img, "LPS"))


def compare_case(case: str, nifti_out: Path, dicom_out: Path, dicom_case: Path) -> dict:
    import pandas as pd
    import SimpleITK as sitk

    from nnunet_iph.dicom.reader import read_dicom_series
    from nnunet_iph.dicom.seg import read_dicom_seg

    a, b = oriented(nifti_out / f"{case}.nii.gz"), oriented(dicom_out / f"{case}.nii.gz")
    vol = {name: pd.read_csv(folder / "volumes.csv", dtype={"case": str}).set_index("case").loc[case, "hemorrhage_ml"]
           for name, folder in (("nifti", nifti_out), ("dicom", dicom_out))}
    files = read_dicom_series(dicom_case).geometry.files
    seg = read_dicom_seg(dicom_out / f"{case}.seg.dcm", files)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(dicom_out / f"{case}.nii.gz")))
    same_shape = a.shape == b.shape
    inter = int(np.logical_and(a > 0, b > 0).sum()) if same_shape else 0
    dice = 2 * inter / max(int((a > 0).sum()) + int((b > 0).sum()), 1) if same_shape else float("nan")
    return {"case": case, "shape": list(a.shape), "same_shape": same_shape,
            "voxels_differing": int((a != b).sum()) if same_shape else None, "dice": round(dice, 6),
            "foreground_share": round(float((a > 0).mean()), 4),
            "volume_ml_nifti": float(vol["nifti"]), "volume_ml_dicom": float(vol["dicom"]),
            "seg_equals_mask": bool(seg.shape == mask.shape and (seg == mask).all())}


def run(cases: list[str], workdir: Path, data: Path) -> dict:
    from nnunet_iph.environment import apply_nnunet_env

    apply_nnunet_env(workdir / "nnunet")
    model = setup_model(workdir)
    nifti_in, dicom_in, gap_in = (workdir / n for n in ("nifti_in", "dicom_in", "gap_in"))
    for d in (nifti_in, dicom_in, gap_in):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    for i, case in enumerate(cases):
        src = data / "ct_scans" / f"{case}.nii.gz"
        (nifti_in / f"{case}_0000.nii.gz").symlink_to(src)
        write_case(src, dicom_in / case, i, localizer=i == 0)
    gap_case = f"{cases[-1]}gap"
    write_case(data / "ct_scans" / f"{cases[-1]}.nii.gz", gap_in / gap_case, 99, drop_slice=10)

    report: dict = {"cases": cases, "model": str(model)}
    outs = {k: workdir / f"out_{k}" for k in ("nifti", "dicom_keep", "dicom_resample", "gap_error", "gap_resample")}
    for o in outs.values():
        shutil.rmtree(o, ignore_errors=True)
    runs = {"nifti": (nifti_in, ()), "dicom_keep": (dicom_in, ("--dicom-irregular", "keep")),
            "dicom_resample": (dicom_in, ("--dicom-irregular", "resample")),
            "gap_error": (gap_in, ()), "gap_resample": (gap_in, ("--dicom-irregular", "resample"))}
    for name, (inp, extra) in runs.items():
        t = time.perf_counter()
        proc = predict_cli(inp, outs[name], model, *extra)
        report[f"{name}_cli_s"] = round(time.perf_counter() - t, 2)
        report[f"{name}_rc"] = proc.returncode
        report[f"{name}_stdout"] = proc.stdout.strip().splitlines()
        if proc.returncode != 0:
            report[f"{name}_stderr"] = proc.stderr.strip().splitlines()[-3:]
    report["keep"] = [compare_case(c, outs["nifti"], outs["dicom_keep"], dicom_in / c) for c in cases]
    report["resample"] = [compare_case(c, outs["nifti"], outs["dicom_resample"], dicom_in / c) for c in cases]
    pj = json.loads((outs["dicom_keep"] / "pipeline.json").read_text(encoding="utf-8"))
    timing = pj["timing"]
    dicom_s = sum(v for k, v in timing["stages"].items() if k.startswith("dicom"))
    report["timing_dicom_keep"] = {**timing, "dicom_stages_share": round(dicom_s / timing["total_s"], 4)}
    report["timing_nifti"] = json.loads((outs["nifti"] / "pipeline.json").read_text(encoding="utf-8"))["timing"]
    report["selection"] = {c: {k: pj["dicom"][c][k] for k in ("selected_by", "handling", "geometry")}
                           | {"others": [(o["description"], o["passed_over"]) for o in pj["dicom"][c]["others"]]}
                           for c in cases}
    if (outs["gap_resample"] / f"{gap_case}.nii.gz").is_file():
        import SimpleITK as sitk

        report["gap_resample_mask_size"] = sitk.ReadImage(str(outs["gap_resample"] / f"{gap_case}.nii.gz")).GetSize()
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["049", "074", "075"])
    ap.add_argument("--data", type=Path, default=PHYSIONET)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/nnunet_iph_bench_dicom"))
    ap.add_argument("--json", type=Path, help="also write the report here")
    args = ap.parse_args()
    if not (args.data / "ct_scans").is_dir():
        sys.exit(f"PhysioNet CT-ICH not found at {args.data}")
    report = run(args.cases, args.workdir, args.data)
    text = json.dumps(report, indent=1, default=str)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
