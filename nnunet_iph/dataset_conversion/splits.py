"""Patient-level data splits: held-out test set, k folds, leave-one-site-out.

All splits are at the patient level (several scans of one patient never straddle train and
validation) and stratified, so that each fold sees every hospital and the whole range of
hemorrhage sizes. nnU-Net reads ``splits_final.json`` from ``nnUNet_preprocessed/DatasetNNN_Name/``;
the converters write it into the raw dataset folder and :func:`install_splits` copies it over.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from nnunet_iph.imageio import write_json

SPLIT_FILES = {"final": "splits_final.json", "kfold": "splits_kfold.json", "loso": "splits_loso.json"}


@dataclass(frozen=True)
class SplitCase:
    case_id: str
    patient_id: str
    site: str
    volume_ml: float | None


def _groups(cases: list[SplitCase]) -> dict[str, list[SplitCase]]:
    g: dict[str, list[SplitCase]] = defaultdict(list)
    for c in cases:
        g[c.patient_id].append(c)
    return dict(sorted(g.items()))


def _group_site(members: list[SplitCase]) -> str:
    return Counter(m.site for m in members).most_common(1)[0][0]


def choose_test_patients(patients: dict[str, str], fraction: float, seed: int) -> set[str]:
    """Hold out ``fraction`` of the patients (``{patient: site}``), stratified by site.

    The per-site quotas use largest remainders, so the total is ``round(fraction * n)``; at least
    one patient stays in training.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {fraction}")
    n = len(patients)
    if fraction == 0 or n == 0:
        return set()
    total = min(int(round(fraction * n)), n - 1)
    by_site: dict[str, list[str]] = defaultdict(list)
    for pid, site in sorted(patients.items()):
        by_site[site].append(pid)
    exact = {s: fraction * len(p) for s, p in by_site.items()}
    quota = {s: min(int(e), len(by_site[s])) for s, e in exact.items()}
    rest = total - sum(quota.values())
    for s in sorted(exact, key=lambda s: (-(exact[s] - int(exact[s])), s)):
        if rest <= 0:
            break
        if quota[s] < len(by_site[s]):
            quota[s] += 1
            rest -= 1
    rng = random.Random(seed)
    test: set[str] = set()
    for site in sorted(by_site):
        pids = list(by_site[site])
        rng.shuffle(pids)
        test.update(pids[: quota[site]])
    return test


def size_bins(volumes: dict[str, float | None]) -> dict[str, str]:
    """Hemorrhage-size stratum per patient: none / small / large (split at the median positive volume)."""
    pos = sorted(v for v in volumes.values() if v)
    median = pos[len(pos) // 2] if pos else 0.0
    return {p: "none" if not v else ("small" if v < median else "large") for p, v in volumes.items()}


def kfold_splits(cases: list[SplitCase], num_folds: int = 5, seed: int = 0) -> list[dict[str, list[str]]]:
    """k patient-level folds stratified by site x hemorrhage size (nnU-Net ``splits_final.json`` format).

    Patients are dealt, stratum by stratum in a seeded random order, to the fold with the fewest
    patients of that stratum (ties: fewest cases, then lowest index). Fewer folds are made when there
    are fewer patients than ``num_folds``; with under 2 patients no split is possible (``[]``).
    """
    groups = _groups(cases)
    k = min(num_folds, len(groups))
    if k < 2:
        return []
    vols = {p: max((m.volume_ml or 0.0) for m in ms) for p, ms in groups.items()}
    bins = size_bins(vols)
    strata: dict[tuple[str, str], list[str]] = defaultdict(list)
    for p, ms in groups.items():
        strata[(_group_site(ms), bins[p])].append(p)
    rng = random.Random(seed)
    fold_of: dict[str, int] = {}
    n_cases = [0] * k
    for key in sorted(strata):
        pids = strata[key]
        rng.shuffle(pids)
        in_stratum = [0] * k
        for p in pids:
            f = min(range(k), key=lambda i: (in_stratum[i], n_cases[i], i))
            fold_of[p] = f
            in_stratum[f] += 1
            n_cases[f] += len(groups[p])
    all_ids = sorted(c.case_id for c in cases)
    splits = []
    for f in range(k):
        val = sorted(c.case_id for c in cases if fold_of[c.patient_id] == f)
        val_set = set(val)
        splits.append({"train": [i for i in all_ids if i not in val_set], "val": val})
    return splits


def loso_splits(cases: list[SplitCase]) -> tuple[list[dict[str, list[str]]], list[str]]:
    """Leave-one-site-out folds (fold i validates on site i, sorted by name); [] with one site."""
    sites = sorted({c.site for c in cases})
    if len(sites) < 2:
        return [], sites
    all_ids = sorted(c.case_id for c in cases)
    out = []
    for s in sites:
        val = sorted(c.case_id for c in cases if c.site == s)
        val_set = set(val)
        out.append({"train": [i for i in all_ids if i not in val_set], "val": val})
    return out, sites


def find_dataset_folder(root: str | os.PathLike, dataset: int | str) -> Path:
    """``DatasetNNN_Name`` under ``root`` from an id (``501``), a name or a full folder name."""
    root = Path(root)
    if isinstance(dataset, int) or str(dataset).isdigit():
        prefix = f"Dataset{int(dataset):03d}_"
        hits = sorted(p for p in root.glob(prefix + "*") if p.is_dir()) if root.is_dir() else []
        if len(hits) != 1:
            raise FileNotFoundError(f"{root}: expected one folder {prefix}*, found "
                                    f"{[h.name for h in hits] or 'none'}")
        return hits[0]
    p = root / str(dataset)
    if not p.is_dir():
        hits = sorted(root.glob(f"Dataset*_{dataset}")) if root.is_dir() else []
        if len(hits) != 1:
            raise FileNotFoundError(f"{root}: no dataset folder {dataset!r}")
        p = hits[0]
    return p


def install_splits(dataset: int | str | os.PathLike, preprocessed_root: str | os.PathLike | None = None,
                   *, scheme: str = "final", raw_root: str | os.PathLike | None = None) -> Path:
    """Copy a converted dataset's splits into ``nnUNet_preprocessed/DatasetNNN_Name/splits_final.json``.

    nnU-Net only reads splits from the preprocessed folder (and writes its own random 5 folds there
    at the first training if none exist), so run this after ``nnUNetv2_plan_and_preprocess`` (or
    before: the folder is created) and before training. ``scheme``: ``final`` (what the conversion
    chose), ``kfold`` or ``loso``. ``dataset``: id, folder name, or the raw dataset folder itself.
    """
    if scheme not in SPLIT_FILES:
        raise ValueError(f"unknown split scheme {scheme!r}; choose from {sorted(SPLIT_FILES)}")
    if isinstance(dataset, (str, os.PathLike)) and Path(dataset).is_dir():
        raw = Path(dataset)
    else:
        raw_root = raw_root or os.environ.get("nnUNet_raw")
        if not raw_root:
            raise ValueError("nnUNet_raw is not set; pass raw_root (--raw-root)")
        raw = find_dataset_folder(raw_root, dataset)  # type: ignore[arg-type]
    src = raw / SPLIT_FILES[scheme]
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no {scheme} splits in the converted dataset "
                                f"(loso needs at least 2 sites, kfold at least 2 patients)")
    splits = json.loads(src.read_text(encoding="utf-8"))
    pre_root = preprocessed_root or os.environ.get("nnUNet_preprocessed")
    if not pre_root:
        raise ValueError("nnUNet_preprocessed is not set; pass preprocessed_root (--preprocessed-root)")
    dest = Path(pre_root) / raw.name / "splits_final.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_json(splits, dest)
    return dest
