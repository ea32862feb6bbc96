"""Conversion throughput (cases/s) against the bare cost of reading and writing the same files.

The bound: one process doing nothing but ``sitk.ReadImage`` image + mask and ``sitk.WriteImage``
both as ``.nii.gz`` (what any converter must at least do). The converter is then run on the same
files with 1 and 2 workers (all checks on, fresh output folder each time). Two input formats:

* ``nii.gz``: the PhysioNet CT-ICH release format; the converter checks and then copies the files
  byte for byte, so it can beat the read+write bound;
* ``mha``: the same volumes as uncompressed MetaImage; the converter has to write NIfTI with
  SimpleITK like the bound does.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/conversion_throughput.py [--n 12] [--src DIR]``
(default source: ../shared/data/physionet-ct-ich, else synthetic 512x512x36 volumes).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SRC = REPO.parent / "shared" / "data" / "physionet-ct-ich"


def synthetic_pairs(dest: Path, n: int) -> list[tuple[Path, Path]]:
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(n):
        arr = rng.integers(-20, 100, (36, 512, 512)).astype(np.int16)
        arr[:, :40] = -20
        m = np.zeros(arr.shape, np.uint8)
        m[10:14, 200:240, 200:260] = 1
        img, msk = sitk.GetImageFromArray(arr), sitk.GetImageFromArray(m)
        img.SetSpacing((0.42, 0.42, 5.0))
        msk.CopyInformation(img)
        pairs.append((dest / f"{i:03d}_img.nii.gz", dest / f"{i:03d}_msk.nii.gz"))
        sitk.WriteImage(img, str(pairs[-1][0]), useCompression=True)
        sitk.WriteImage(msk, str(pairs[-1][1]), useCompression=True)
    return pairs


def as_format(pairs: list[tuple[Path, Path]], dest: Path, ext: str) -> list[tuple[Path, Path]]:
    dest.mkdir(parents=True, exist_ok=True)
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # NIfTI-only header fields MetaImage can't store
    out = []
    for img, msk in pairs:
        new = (dest / (img.name.split(".")[0] + "_img" + ext), dest / (msk.name.split(".")[0] + "_msk" + ext))
        sitk.WriteImage(sitk.ReadImage(str(img)), str(new[0]), useCompression=False)
        sitk.WriteImage(sitk.ReadImage(str(msk)), str(new[1]), useCompression=False)
        out.append(new)
    sitk.ProcessObject.SetGlobalWarningDisplay(True)
    return out


def manifest_for(pairs: list[tuple[Path, Path]], path: Path) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["subject_id", "image", "mask", "site", "age", "sex"])
        for i, (img, msk) in enumerate(pairs):
            w.writerow([f"c{i:03d}", img, msk, f"site{i % 2}", "", ""])
    return path


def bare_read_write(pairs: list[tuple[Path, Path]], out: Path) -> float:
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    for i, (img, msk) in enumerate(pairs):
        sitk.WriteImage(sitk.ReadImage(str(img)), str(out / f"c{i:03d}_0000.nii.gz"), useCompression=True)
        sitk.WriteImage(sitk.ReadImage(str(msk)), str(out / f"c{i:03d}.nii.gz"), useCompression=True)
    return time.perf_counter() - t


def converter(manifest: Path, raw: Path, workers: int) -> float:
    from nnunet_iph.dataset_conversion import convert_multisite

    shutil.rmtree(raw, ignore_errors=True)
    t = time.perf_counter()
    convert_multisite(manifest, 901, "Bench", raw, num_workers=workers, progress=False)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=12, help="number of cases (default 12)")
    ap.add_argument("--src", type=Path, default=DEFAULT_SRC, help="PhysioNet-layout folder (ct_scans/, masks/)")
    ap.add_argument("--formats", default="nii.gz,mha")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--repeats", type=int, default=1, help="take the best of this many runs")
    args = ap.parse_args()
    import io
    import contextlib

    tmp = Path(tempfile.mkdtemp(prefix="conv_bench_"))
    try:
        if (args.src / "ct_scans").is_dir():
            ids = sorted(p.name[:3] for p in (args.src / "ct_scans").glob("*.nii.gz"))[: args.n]
            base = [(args.src / "ct_scans" / f"{i}.nii.gz", args.src / "masks" / f"{i}.nii.gz") for i in ids]
            what = f"PhysioNet CT-ICH ({args.src})"
        else:
            (tmp / "syn").mkdir()
            base = synthetic_pairs(tmp / "syn", args.n)
            what = "synthetic 512x512x36 int16"
        n = len(base)
        vox = sum(np.prod(sitk.ReadImage(str(p[0])).GetSize()) for p in base) / n
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"input: {n} cases of {what}, mean {vox / 1e6:.1f} Mvoxel; cpu_count={os.cpu_count()}, "
              f"load average {load:.1f}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}")
        print(f"{'format':<8} {'run':<28} {'seconds':>8} {'cases/s':>8} {'vs bound':>9} {'per worker':>11}")
        for fmt in args.formats.split(","):
            pairs = base if fmt == "nii.gz" else as_format(base, tmp / fmt, "." + fmt)
            manifest = manifest_for(pairs, tmp / f"manifest_{fmt}.csv")
            bound = min(bare_read_write(pairs, tmp / "bare") for _ in range(args.repeats))
            shutil.rmtree(tmp / "bare", ignore_errors=True)
            rate_bound = n / bound
            print(f"{fmt:<8} {'bare SimpleITK read+write':<28} {bound:8.2f} {rate_bound:8.2f} {1.0:9.2f} {'':>11}")
            for w in (int(x) for x in args.workers.split(",")):
                with contextlib.redirect_stderr(io.StringIO()):
                    sec = min(converter(manifest, tmp / "raw", w) for _ in range(args.repeats))
                rate = n / sec
                print(f"{fmt:<8} {f'nnunet-iph convert, {w} worker(s)':<28} {sec:8.2f} {rate:8.2f} "
                      f"{rate / rate_bound:9.2f} {rate / rate_bound / w:11.2f}")
            shutil.rmtree(tmp / "raw", ignore_errors=True)
            if fmt != "nii.gz":
                shutil.rmtree(tmp / fmt, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
