"""Per-case time of HD95 + ASSD + NSD: nnunet_iph vs DeepMind surface-distance, MONAI and medpy.

Runs on the real PhysioNet CT-ICH masks (the positive cases); the "prediction" is the reference
changed deterministically (in-plane erosion by one voxel unless that empties it, a shift of 3 voxels in y
and -2 in x, the top slice dropped unless it is the only one; ``--scenario erode-shift-fp`` also adds a small false-positive blob far
away). Every library gets the same boolean arrays (512 x 512 x N, full size) and computes the three
metrics its usual way; each case is timed ``--repeats`` times and the fastest run kept. Libraries
that are not installed are skipped (they are benchmark-only: ``pip install -r benchmarks/requirements.txt``).

Comparisons: ours 'surfel' vs DeepMind (HD95 = max of directed area-weighted 95th percentiles, ASSD =
area-weighted pooled mean, NSD); ours 'voxel' vs MONAI (HD95 max of directed, ASSD symmetric, NSD
without subvoxels) and vs medpy (HD95 pooled, ASSD).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/metrics_speed.py [--max-cases N] [--repeats R]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from nnunet_iph.analysis.metrics import read_mask, surface_metrics  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "physionet-ct-ich" / "masks"


def simulate_prediction(mask: np.ndarray, false_positive: bool = False) -> np.ndarray:
    """A deterministic imperfect 'prediction' of a (z, y, x) mask."""
    m = mask != 0
    st = np.zeros((3, 3, 3), bool)
    st[1] = ndimage.generate_binary_structure(2, 1)
    pred = ndimage.binary_erosion(m, st)
    if not pred.any():  # tiny lesions: keep them rather than predict nothing
        pred = m.copy()
    pred = np.roll(pred, (3, -2), axis=(1, 2))
    zs = np.flatnonzero(pred.any(axis=(1, 2)))
    if zs.size > 1:
        pred[zs[-1]] = False
    if false_positive:
        pred[zs[0], 40:46, 60:66] = True
    return pred


def _timed(fn, repeats: int):
    best, value = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t0)
    return best, value


def _libraries(tol: float):
    """(name, convention, function(ref, pred, spacing) -> (hd95, assd, nsd)) of what is installed."""
    libs = [
        ("ours surfel", "surfel", lambda r, p, s: _ours(r, p, s, "surfel", "max_directed", tol)),
        ("ours voxel", "voxel", lambda r, p, s: _ours(r, p, s, "voxel", "max_directed", tol)),
        ("ours voxel pooled", "voxel-pooled", lambda r, p, s: _ours(r, p, s, "voxel", "pooled", tol)),
    ]
    skipped = []
    try:
        import surface_distance as sd

        if not hasattr(np, "Inf"):  # surface-distance 0.1 uses np.Inf, removed in numpy 2
            np.Inf = np.inf

        def deepmind(r, p, s):
            d = sd.compute_surface_distances(r, p, s)
            hd95 = sd.compute_robust_hausdorff(d, 95)
            a1, a2 = sd.compute_average_surface_distance(d)
            w1, w2 = d["surfel_areas_gt"].sum(), d["surfel_areas_pred"].sum()
            return hd95, (a1 * w1 + a2 * w2) / (w1 + w2), sd.compute_surface_dice_at_tolerance(d, tol)
        libs.append(("DeepMind surface-distance", "surfel", deepmind))
    except ImportError:
        skipped.append("surface-distance")
    try:
        import torch
        from monai.metrics import (compute_average_surface_distance, compute_hausdorff_distance,
                                   compute_surface_dice)
        torch.set_num_threads(1)

        def monai(r, p, s):
            y, yp = torch.from_numpy(r)[None, None], torch.from_numpy(p)[None, None]
            hd95 = compute_hausdorff_distance(yp, y, include_background=True, percentile=95, spacing=s)
            assd = compute_average_surface_distance(yp, y, include_background=True, symmetric=True, spacing=s)
            nsd = compute_surface_dice(yp, y, [tol], include_background=True, spacing=s)
            return float(hd95), float(assd), float(nsd)
        libs.append(("MONAI", "voxel", monai))
    except ImportError:
        skipped.append("monai")
    try:
        from medpy.metric import binary as medpy_binary

        def medpy(r, p, s):
            return medpy_binary.hd95(p, r, s), medpy_binary.assd(p, r, s), float("nan")
        libs.append(("medpy", "voxel-pooled", medpy))
    except ImportError:
        skipped.append("medpy")
    return libs, skipped


def _ours(r, p, s, surface, variant, tol):
    m = surface_metrics(r, p, s, surface=surface, hd95_variant=variant, nsd_tolerance_mm=tol)
    return m["hd95_mm"], m["assd_mm"], m[f"nsd_{tol:g}mm"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of NNN.nii.gz masks")
    ap.add_argument("--max-cases", type=int, default=0, help="only the first N positive cases (0: all)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per case and library (fastest kept)")
    ap.add_argument("--slow-repeats", type=int, default=1, help="runs per case for medpy and MONAI")
    ap.add_argument("--tolerance", type=float, default=2.0, help="NSD tolerance in mm")
    ap.add_argument("--scenario", choices=("erode-shift", "erode-shift-fp"), default="erode-shift")
    ap.add_argument("--libs", default="", help="comma-separated subset of library names (substring match)")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")

    files = sorted(args.data.glob("*.nii.gz"))
    if not files:
        print(f"no masks under {args.data}", file=sys.stderr)
        return 2
    libs, skipped = _libraries(args.tolerance)
    if args.libs:
        wanted = [w.strip().lower() for w in args.libs.split(",") if w.strip()]
        libs = [lib for lib in libs if lib[0].startswith("ours") or any(w in lib[0].lower() for w in wanted)]
    cases = []
    for f in files:
        mask, spacing = read_mask(f)
        if not mask.any():
            continue
        cases.append((f.name.split(".")[0], mask != 0, spacing))
        if args.max_cases and len(cases) >= args.max_cases:
            break
    print(f"{len(cases)} positive cases from {args.data}; scenario {args.scenario}; NSD tolerance "
          f"{args.tolerance:g} mm; repeats {args.repeats} (medpy/MONAI {args.slow_repeats}); "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    if skipped:
        print("not installed, skipped: " + ", ".join(skipped))

    times = {name: [] for name, _, _ in libs}
    values = {name: [] for name, _, _ in libs}
    for i, (case, ref, spacing) in enumerate(cases):
        pred = simulate_prediction(ref, args.scenario.endswith("fp"))
        if i == 0:  # warm-up: imports, lookup tables
            for _, _, fn in libs:
                fn(ref, pred, spacing)
        for name, _, fn in libs:
            reps = args.slow_repeats if name in ("MONAI", "medpy") else args.repeats
            t, v = _timed(lambda: fn(ref, pred, spacing), reps)
            times[name].append(t * 1e3)
            values[name].append(np.asarray(v, float))
        print(f"  {case} {ref.shape} " + "  ".join(f"{n}={times[n][-1]:.1f}ms" for n, _, _ in libs),
              flush=True)

    ours_for = {"surfel": "ours surfel", "voxel": "ours voxel", "voxel-pooled": "ours voxel pooled"}
    print()
    header = (f"{'library':<27} {'convention':<13} {'median ms':>9} {'mean ms':>9} {'max ms':>9} "
              f"{'x ours':>7} {'max|dHD95|':>11} {'max|dASSD|':>11} {'max|dNSD|':>10}")
    print(header)
    print("-" * len(header))
    for name, conv, _ in libs:
        t = np.array(times[name])
        ours = ours_for[conv]
        ratio = np.median(t) / np.median(times[ours])
        if name == ours:
            diffs = ["", "", ""]
        else:
            d = np.abs(np.array(values[name]) - np.array(values[ours]))
            diffs = [f"{np.nanmax(d[:, k]):.2e}" if np.isfinite(d[:, k]).any() else "n/a" for k in range(3)]
        print(f"{name:<27} {conv:<13} {np.median(t):9.2f} {t.mean():9.2f} {t.max():9.2f} {ratio:7.1f} "
              f"{diffs[0]:>11} {diffs[1]:>11} {diffs[2]:>10}")
    surfel, voxel = np.array(values["ours surfel"]), np.array(values["ours voxel"])
    gap = np.abs(surfel[:, 0] - voxel[:, 0])
    print(f"\nHD95 surfel vs voxel convention on the same cases: median |difference| {np.median(gap):.2f} mm, "
          f"max {gap.max():.2f} mm (case {cases[int(gap.argmax())][0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
