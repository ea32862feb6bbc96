"""Time ``nnunet-iph analyze`` on a simulated 5-fold cross-validation of the real PhysioNet masks.

No training: three "systems" are made from the reference masks themselves (in-plane erosion,
dilation, a 2-voxel shift), written into an nnU-Net results tree with 5 folds, and analysed with
a cases.csv that, like the real data, has one site and no age/sex (so those OLS terms are dropped
with a message). Prints the time per step and a few headline numbers.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/analysis_physionet_simulated_cv.py [--cases 75] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
PHYSIONET = REPO.parent / "shared" / "data" / "physionet-ct-ich"
SUBTYPES = ["Intraventricular", "Intraparenchymal", "Subarachnoid", "Epidural", "Subdural"]


def perturb(mask: np.ndarray, kind: str) -> np.ndarray:
    inplane = np.zeros((1, 3, 3), bool)
    inplane[0] = ndimage.generate_binary_structure(2, 1)
    if kind == "eroded":
        return ndimage.binary_erosion(mask, inplane)
    if kind == "dilated":
        return ndimage.binary_dilation(mask, inplane)
    return np.roll(mask, 2, axis=2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=75)
    ap.add_argument("--keep", help="build the tree and the analysis here and keep them")
    args = ap.parse_args()
    if not (PHYSIONET / "masks").is_dir():
        raise SystemExit(f"PhysioNet copy not found at {PHYSIONET}")
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="analysis_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    masks = sorted((PHYSIONET / "masks").glob("*.nii.gz"))[: args.cases]
    labels = work / "raw" / "Dataset990_PhysioNetSim" / "labelsTr"
    labels.mkdir(parents=True, exist_ok=True)
    ds = work / "results" / "Dataset990_PhysioNetSim"
    diag = pd.read_csv(PHYSIONET / "hemorrhage_diagnosis_raw_ct.csv")
    rows = []
    for k, path in enumerate(masks):
        case = f"ICH_{path.name[:3]}"
        img = sitk.ReadImage(str(path))
        arr = sitk.GetArrayFromImage(img) > 0
        shutil.copy(path, labels / f"{case}.nii.gz")
        fold = k % 5
        for kind in ("eroded", "dilated", "shifted"):
            out = ds / f"nnUNetTrainer__nnUNetPlans_{kind}__2d" / f"fold_{fold}" / "validation" / f"{case}.nii.gz"
            out.parent.mkdir(parents=True, exist_ok=True)
            pred = sitk.GetImageFromArray(perturb(arr, kind).astype(np.uint8))
            pred.CopyInformation(img)
            sitk.WriteImage(pred, str(out), useCompression=True)
        flags = diag[diag.PatientNumber == int(path.name[:3])][SUBTYPES].max()
        rows.append({"case_id": case, "site": "AlHilla", "age": np.nan, "sex": "",
                     "volume_ml": float(arr.sum() * np.prod(img.GetSpacing()) / 1000.0),
                     **{s.lower(): int(flags[s]) for s in SUBTYPES}})
    cases_csv = work / "cases.csv"
    pd.DataFrame(rows).to_csv(cases_csv, index=False)
    t_build = time.perf_counter() - t0

    from nnunet_iph.cli import main as cli

    out = work / "analysis"
    t1 = time.perf_counter()
    rc = cli(["analyze", str(work / "results"), "--cases", str(cases_csv), "-o", str(out),
              "--labels", str(labels), "--n-overlays", "0"])
    t_analyze = time.perf_counter() - t1
    assert rc == 0
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    a = res["analyses"]["validation"]
    print(f"cases: {len(masks)}; systems: {len(a['systems'])}; tree built in {t_build:.1f} s; "
          f"analyze (score + stats + tables + figures + report) {t_analyze:.1f} s")
    print(f"{'system':>10} {'dice':>14} {'hd95_mm':>14} {'ICC(2,1)':>9} {'bias mL':>9}")
    va = {r["system"]: r for r in a["volume_agreement"]}
    for d, h in zip(a["metrics"]["dice"]["describe"], a["metrics"]["hd95_mm"]["describe"]):
        s = d["system"]
        print(f"{s:>10} {d['mean']:.3f} ± {d['sd']:.3f} {h['mean']:6.2f} ± {h['sd']:5.2f} "
              f"{va[s]['icc2_1']:9.3f} {va[s]['ba_bias_ml']:9.2f}")
    print("OLS messages:", "; ".join(a["metrics"]["dice"]["ols"][0]["messages"]))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
