"""ABC/2 against planimetry on real reference masks (PhysioNet CT-ICH), Bland-Altman, and the time per case.

    .venv/bin/python benchmarks/abc2_agreement.py OUT_DIR [--data ../shared/data/physionet-ct-ich]

For every non-empty mask: ABC/2 of the largest lesion (nnunet_iph.inference.abc2) against the
planimetric volume of that lesion and of all lesions, and the sum of every lesion's ABC/2
against the total. Prints mean difference, 95 % limits of agreement (mean +- 1.96 SD), relative
error; writes OUT_DIR/abc2_bland_altman.png and OUT_DIR/abc2_cases.csv (never into the repository).
Also times the per-case work of ``predict``'s outputs (volumes row + QC picture from the CT).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scipy.spatial import ConvexHull  # noqa: E402

from nnunet_iph.inference.abc2 import _corner_points, abc2, axial_axis, label_lesions  # noqa: E402
from nnunet_iph.inference.outputs import CaseJob, process_case  # noqa: E402


def case_numbers(path: Path) -> dict | None:
    img = sitk.ReadImage(str(path))
    arr = sitk.GetArrayViewFromImage(img)
    labels, n = label_lesions(arr)
    if n == 0:
        return None
    voxel_ml = float(np.prod(img.GetSpacing())) / 1000
    sizes = np.bincount(labels.ravel())[1:]
    boxes = ndimage.find_objects(labels)
    per_lesion = [abc2(labels[b] == i + 1, img.GetSpacing(), img.GetDirection()).ml for i, b in enumerate(boxes)]
    largest = int(np.argmax(sizes))
    return {"case": path.name.split(".")[0], "n_lesions": n, "total_ml": sizes.sum() * voxel_ml,
            "largest_ml": sizes[largest] * voxel_ml, "abc2_largest_ml": per_lesion[largest],
            "abc2_sum_ml": float(np.sum(per_lesion)),
            "solidity": solidity(labels[boxes[largest]] == largest + 1, img)}


def solidity(lesion: np.ndarray, img: sitk.Image) -> float:
    """Area / convex-hull area of the lesion on its A/B slice: 1 for convex shapes, low for crescents."""
    axis = axial_axis(img.GetDirection())
    stack = np.moveaxis(lesion, axis, 0)
    section = stack[int(np.argmax(stack.reshape(len(stack), -1).sum(1)))]
    spacing = [img.GetSpacing()[2 - a] for a in range(3) if a != axis]
    return float(section.sum() * np.prod(spacing) / ConvexHull(_corner_points(section, spacing)).volume)


def agreement(estimate: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    diff = estimate - reference
    rel = 100 * diff / reference
    sd = float(diff.std(ddof=1))
    return {"mean_diff_ml": float(diff.mean()), "sd_ml": sd, "loa_low_ml": float(diff.mean() - 1.96 * sd),
            "loa_high_ml": float(diff.mean() + 1.96 * sd), "mean_rel_pct": float(rel.mean()),
            "median_rel_pct": float(np.median(rel)), "median_abs_rel_pct": float(np.median(np.abs(rel))),
            "over_share": float((diff > 0).mean())}


def bland_altman(ax, estimate: np.ndarray, reference: np.ndarray, title: str) -> None:
    mean, diff = (estimate + reference) / 2, estimate - reference
    m, sd = diff.mean(), diff.std(ddof=1)
    ax.scatter(mean, diff, s=14)
    for y, style in ((m, "-"), (m - 1.96 * sd, "--"), (m + 1.96 * sd, "--")):
        ax.axhline(y, color="k", linestyle=style, linewidth=0.8)
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set(xlabel="mean of ABC/2 and planimetry (mL)", ylabel="ABC/2 - planimetry (mL)", title=title)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir", type=Path)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "physionet-ct-ich")
    p.add_argument("--timed-cases", type=int, default=10, help="cases timed with their QC picture (0: none)")
    args = p.parse_args()
    if args.out_dir.resolve().is_relative_to(REPO):
        p.error(f"{args.out_dir}: write outside the repository")
    masks = sorted((args.data / "masks").glob("*.nii.gz"))
    if not masks:
        p.error(f"no masks in {args.data / 'masks'}")
    rows = [r for r in map(case_numbers, masks) if r is not None]
    t = pd.DataFrame(rows)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    t.to_csv(args.out_dir / "abc2_cases.csv", index=False)
    print(f"{len(t)} non-empty masks of {len(masks)}; lesions per case: median {t['n_lesions'].median():.0f}, "
          f"max {t['n_lesions'].max()}; total volume median {t['total_ml'].median():.2f} mL")
    comparisons = (("ABC/2 (largest) vs planimetry of the largest lesion", "abc2_largest_ml", "largest_ml"),
                   ("ABC/2 (largest) vs planimetry of all lesions", "abc2_largest_ml", "total_ml"),
                   ("sum of ABC/2 over lesions vs planimetry of all lesions", "abc2_sum_ml", "total_ml"))
    for title, est, ref in comparisons:
        a = agreement(t[est].to_numpy(), t[ref].to_numpy())
        print(f"{title}:\n  mean difference {a['mean_diff_ml']:+.2f} mL (SD {a['sd_ml']:.2f}), 95 % limits of "
              f"agreement [{a['loa_low_ml']:+.2f}, {a['loa_high_ml']:+.2f}] mL; relative error mean "
              f"{a['mean_rel_pct']:+.1f} %, median {a['median_rel_pct']:+.1f} % (median |.| "
              f"{a['median_abs_rel_pct']:.1f} %); ABC/2 larger in {100 * a['over_share']:.0f} % of cases")
    t["rel_pct"] = 100 * (t["abc2_largest_ml"] / t["largest_ml"] - 1)
    cut = t["solidity"].median()
    for name, part in (("irregular (solidity below the median)", t[t["solidity"] < cut]),
                       ("regular (solidity at or above the median)", t[t["solidity"] >= cut])):
        print(f"largest lesion, {name} {cut:.2f}: {len(part)} cases, relative error median "
              f"{part['rel_pct'].median():+.1f} %, mean {part['rel_pct'].mean():+.1f} %")
    print(f"Spearman correlation of solidity with the relative error: "
          f"{t['solidity'].corr(t['rel_pct'], method='spearman'):+.2f}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.2))
    FigureCanvasAgg(fig)
    for ax, (title, est, ref) in zip(fig.subplots(1, 3), comparisons):
        bland_altman(ax, t[est].to_numpy(), t[ref].to_numpy(), title.replace(" vs ", "\nvs "))
    fig.tight_layout()
    fig.savefig(args.out_dir / "abc2_bland_altman.png", dpi=110)
    print(f"wrote {args.out_dir / 'abc2_bland_altman.png'} and {args.out_dir / 'abc2_cases.csv'}")
    if args.timed_cases:
        jobs = [CaseJob(r["case"], str(args.data / "masks" / f"{r['case']}.nii.gz"),
                        str(args.data / "ct_scans" / f"{r['case']}.nii.gz")) for r in rows[:args.timed_cases]]
        process_case(jobs[0])  # imports (matplotlib) outside the timing
        wall, cpu = [], []
        for job in jobs:
            t0, c0 = time.perf_counter(), time.process_time()
            process_case(job)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        print(f"volumes row + QC picture (reading mask and CT included), {len(wall)} real scans: "
              f"{np.mean(wall):.3f} s/case wall (max {np.max(wall):.3f}), {np.mean(cpu):.3f} s/case CPU "
              "(wall > CPU: other processes on the machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
