"""Intracranial masks on every real PhysioNet CT-ICH scan (HU clipped at 100) and on the phantom
(full-range HU): coverage of the reference hemorrhage, intracranial volume, time per scan on one core.

Coverage = reference hemorrhage voxels inside the mask / all reference hemorrhage voxels. A scan the
extractor passes through (implausible volume, not HU) counts as covered and is listed. QC pictures of
every outlier (coverage < 0.95, volume outside 900-2100 mL, pass-through) go to ``--out``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/brain_mask_physionet.py --out /tmp/brain_bench
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from tqdm import tqdm  # noqa: E402

from nnunet_iph.brain.extraction import intracranial_mask  # noqa: E402
from nnunet_iph.inference.qc import render_qc  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "physionet-ct-ich"
ICV_RANGE = (900.0, 2100.0)


def run(cases: list[tuple[str, Path, Path]], out: Path, label: str) -> pd.DataFrame:
    rows = []
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    for case, ct_path, ref_path in tqdm(cases, desc=label, unit="scan"):
        image = sitk.ReadImage(str(ct_path))
        ref = sitk.GetArrayFromImage(sitk.ReadImage(str(ref_path))) > 0
        res = intracranial_mask(image, case=case)
        mask = sitk.GetArrayFromImage(res.mask) > 0
        n_ref = int(ref.sum())
        coverage = float((mask & ref).sum() / n_ref) if n_ref else np.nan
        outlier = (res.passed_through or (n_ref and coverage < 0.95)
                   or not ICV_RANGE[0] <= (res.volume_ml or 0) <= ICV_RANGE[1])
        if outlier:
            title = f"{label} {case}: {res.volume_ml or 'passed through'} mL, coverage {coverage:.3f}"
            png = render_qc(sitk.GetArrayViewFromImage(image), mask.astype(np.uint8), image.GetSpacing(),
                            image.GetDirection(), title)
            (out / f"{label}_{case}.png").write_bytes(png)
        rows.append({"set": label, "case": case, "intracranial_ml": res.volume_ml, "passed_through": res.passed_through,
                     "ref_voxels": n_ref, "coverage": coverage, "seconds": res.seconds,
                     "warnings": "; ".join(res.warnings)})
    return pd.DataFrame(rows)


def report(df: pd.DataFrame, label: str) -> None:
    pos = df[df["ref_voxels"] > 0]
    pooled = float((pos["coverage"] * pos["ref_voxels"]).sum() / pos["ref_voxels"].sum())
    icv = df["intracranial_ml"].dropna()
    print(f"\n== {label}: {len(df)} scans, {len(pos)} with hemorrhage")
    print(f"pooled coverage {pooled:.4f}; per scan: median {pos['coverage'].median():.4f}, "
          f"min {pos['coverage'].min():.4f}, >= 0.95 on {(pos['coverage'] >= 0.95).sum()}/{len(pos)}, "
          f">= 0.85 on {(pos['coverage'] >= 0.85).sum()}/{len(pos)}")
    inside = icv.between(*ICV_RANGE)
    print(f"intracranial volume: {icv.min():.0f}-{icv.max():.0f} mL (median {icv.median():.0f}); within "
          f"{ICV_RANGE[0]:g}-{ICV_RANGE[1]:g} mL on {int(inside.sum())}/{len(df)}; passed through "
          f"{int(df['passed_through'].sum())}")
    print(f"seconds per scan (one core): median {df['seconds'].median():.2f}, max {df['seconds'].max():.2f}")
    for _, r in df[df["passed_through"] | ~df["intracranial_ml"].fillna(-1).between(*ICV_RANGE)
                   | (df["coverage"] < 0.95)].iterrows():
        print(f"  outlier {r['case']}: {r['intracranial_ml']} mL, coverage {r['coverage']:.3f} {r['warnings']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, required=True, help="folder for the CSV and the outliers' QC pictures")
    ap.add_argument("--phantom", type=int, default=12, help="phantom subjects (full-range HU); 0: none")
    ap.add_argument("--phantom-size", default="clinical", help="phantom size preset (default clinical: 512 x 512)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    frames = []
    if (args.data / "ct_scans").is_dir():
        cases = [(p.name[:-7], p, args.data / "masks" / p.name) for p in sorted((args.data / "ct_scans").glob("*.nii.gz"))]
        frames.append(run(cases, args.out, "physionet"))
        report(frames[-1], "PhysioNet CT-ICH (HU clipped to [-20, 100])")
    else:
        print(f"{args.data}: not found, PhysioNet part skipped", file=sys.stderr)
    if args.phantom:
        from nnunet_iph.phantom import PhantomConfig, generate_cohort

        with tempfile.TemporaryDirectory() as tmp:
            generate_cohort(Path(tmp), PhantomConfig(n_subjects=args.phantom, size=args.phantom_size), progress=False)
            cases = [(p.name[:-7], p, Path(tmp) / "masks" / p.name) for p in sorted((Path(tmp) / "images").glob("*.nii.gz"))]
            frames.append(run(cases, args.out, "phantom"))
        report(frames[-1], "phantom (full-range HU)")
    pd.concat(frames).to_csv(args.out / "brain_masks_benchmark.csv", index=False)
    print(f"\nper-scan table: {args.out / 'brain_masks_benchmark.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
