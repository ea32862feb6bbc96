"""PNG figures for the analysis report (matplotlib, Agg backend: no display needed).

All plotting functions take the tidy per-case table (one row per system x case), write one PNG
atomically and return its path. :func:`overlay_png` is independent of the table: it draws a CT
slice with the segmentation errors coloured (TP green, FP red, FN blue) and is reused by the demo.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless machines, CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from nnunet_iph.imageio import atomic_path  # noqa: E402

#: overlay colours (RGB 0..1)
TP_COLOR = (0.0, 0.85, 0.0)
FP_COLOR = (1.0, 0.0, 0.0)
FN_COLOR = (0.1, 0.35, 1.0)
OVER_COLOR = "tab:red"
UNDER_COLOR = "tab:blue"
EXACT_COLOR = "0.4"


def _save(fig: plt.Figure, out_path: str | os.PathLike, dpi: int = 120) -> Path:
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return Path(out_path)


def _systems(df: pd.DataFrame, model_col: str) -> list[str]:
    return list(dict.fromkeys(df[model_col].astype(str)))


def _grid(k: int, width: float = 4.2, height: float = 3.6, max_cols: int = 3):
    ncols = min(max_cols, max(k, 1))
    nrows = math.ceil(max(k, 1) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    flat = axes.ravel().tolist()
    for ax in flat[k:]:
        ax.set_visible(False)
    return fig, flat[:k]


def _num(s: pd.Series) -> np.ndarray:
    return np.asarray(pd.to_numeric(s, errors="coerce"), dtype=float)


# --------------------------------------------------------------------------------------------
# table figures

def box_by_site(df: pd.DataFrame, metric: str, out_path: str | os.PathLike, model_col: str = "system",
                site_col: str = "site", title: str | None = None) -> Path:
    """Box plots of ``metric`` per site, one box per model side by side (individual cases as dots)."""
    data = df.copy()
    if site_col not in data.columns:
        data[site_col] = "all"
    data[site_col] = data[site_col].astype(str)
    sites = sorted(data[site_col].unique())
    systems = _systems(data, model_col)
    k = len(systems)
    width = 0.8 / k
    colors = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 + len(sites) * (0.6 + 0.45 * k)), 4.2))
    n_bad = 0
    for j, system in enumerate(systems):
        for i, site in enumerate(sites):
            vals = _num(data.loc[(data[model_col].astype(str) == system) & (data[site_col] == site), metric])
            n_bad += int((~np.isfinite(vals)).sum())
            vals = vals[np.isfinite(vals)]
            if not len(vals):
                continue
            pos = i - 0.4 + width * (j + 0.5)
            ax.boxplot(vals, positions=[pos], widths=width * 0.85, patch_artist=True, showfliers=False,
                       boxprops={"facecolor": colors(j % 10), "alpha": 0.55}, medianprops={"color": "k"})
            jitter = (np.random.default_rng(j * 1000 + i).random(len(vals)) - 0.5) * width * 0.5
            ax.scatter(pos + jitter, vals, s=9, color=colors(j % 10), edgecolor="k", linewidth=0.3, zorder=3)
    ax.set_xticks(range(len(sites)))
    ax.set_xticklabels([f"{s}\n(n={data.loc[data[site_col] == s, 'case'].nunique() if 'case' in data else ''})"
                        for s in sites])
    ax.set_xlim(-0.6, len(sites) - 0.4)
    ax.set_xlabel(site_col)
    ax.set_ylabel(metric)
    ax.legend(handles=[Patch(facecolor=colors(j % 10), alpha=0.55, label=s) for j, s in enumerate(systems)],
              fontsize=8, loc="best", frameon=False)
    sub = f" ({n_bad} non-finite value(s) not shown)" if n_bad else ""
    ax.set_title((title or f"{metric} by {site_col} and model") + sub, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out_path)


def _sizes(volume: np.ndarray, vmax: float) -> np.ndarray:
    v = np.nan_to_num(volume, nan=0.0)
    return 12.0 + 240.0 * np.sqrt(np.clip(v, 0, None) / vmax) if vmax > 0 else np.full(len(v), 20.0)


def metric_vs_age(df: pd.DataFrame, metric: str, out_path: str | os.PathLike, model_col: str = "system",
                  age_col: str = "age", ref_col: str = "reference_volume_ml",
                  pred_col: str = "volume_pred_ml") -> Path | None:
    """``metric`` against age, marker area ~ reference volume, colour = volume over/under-estimated.

    Returns None (and writes nothing) when no case has an age.
    """
    if age_col not in df.columns or not np.isfinite(_num(df[age_col])).any():
        return None
    systems = _systems(df, model_col)
    fig, axes = _grid(len(systems))
    vmax = np.nanmax(_num(df[ref_col])) if ref_col in df.columns and np.isfinite(_num(df[ref_col])).any() else 0.0
    for ax, system in zip(axes, systems):
        sub = df[df[model_col].astype(str) == system]
        age, y = _num(sub[age_col]), _num(sub[metric])
        ref = _num(sub[ref_col]) if ref_col in sub.columns else np.full(len(sub), np.nan)
        pred = _num(sub[pred_col]) if pred_col in sub.columns else np.full(len(sub), np.nan)
        diff = pred - ref
        color = np.where(diff > 0, OVER_COLOR, np.where(diff < 0, UNDER_COLOR, EXACT_COLOR)).astype(object)
        ok = np.isfinite(age) & np.isfinite(y)
        ax.scatter(age[ok], y[ok], s=_sizes(ref[ok], vmax), c=list(color[ok]), alpha=0.6, edgecolor="k",
                   linewidth=0.4)
        ax.set_title(f"{system} (n={int(ok.sum())})", fontsize=9)
        ax.set_xlabel(age_col)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], marker="o", ls="", color=OVER_COLOR, label="over-estimated volume"),
               Line2D([], [], marker="o", ls="", color=UNDER_COLOR, label="under-estimated volume")]
    if vmax > 0:
        for v in (vmax / 10, vmax / 2, vmax):
            handles.append(Line2D([], [], marker="o", ls="", color="0.7", markeredgecolor="k",
                                  markersize=math.sqrt(float(_sizes(np.array([v]), vmax)[0])),
                                  label=f"{v:.3g} mL"))
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 1.04))
    fig.suptitle(f"{metric} vs {age_col} (marker area ~ reference volume)", y=1.09, fontsize=10)
    fig.tight_layout()
    return _save(fig, out_path)


def bland_altman(df: pd.DataFrame, out_path: str | os.PathLike, model_col: str = "system",
                 pred_col: str = "volume_pred_ml", ref_col: str = "reference_volume_ml") -> Path:
    """Bland-Altman plots of predicted vs reference volume, one panel per model (bias, 95% limits)."""
    systems = _systems(df, model_col)
    fig, axes = _grid(len(systems))
    for ax, system in zip(axes, systems):
        sub = df[df[model_col].astype(str) == system]
        p, r = _num(sub[pred_col]), _num(sub[ref_col])
        ok = np.isfinite(p) & np.isfinite(r)
        mean, diff = (p[ok] + r[ok]) / 2, p[ok] - r[ok]
        ax.scatter(mean, diff, s=14, alpha=0.7, edgecolor="k", linewidth=0.3)
        if len(diff):
            bias = diff.mean()
            sd = diff.std(ddof=1) if len(diff) > 1 else 0.0
            hi, lo = bias + 1.96 * sd, bias - 1.96 * sd
            for y, ls, lab in ((bias, "-", f"bias {bias:.2f}"), (hi, "--", f"+1.96 SD {hi:.2f}"),
                               (lo, "--", f"-1.96 SD {lo:.2f}")):
                ax.axhline(y, color="tab:red" if ls == "-" else "0.4", ls=ls, lw=1, label=lab)
            ax.legend(fontsize=7, frameon=False, loc="best")
        ax.axhline(0, color="k", lw=0.5, alpha=0.5)
        ax.set_title(f"{system} (n={int(ok.sum())})", fontsize=9)
        ax.set_xlabel("mean of predicted and reference volume (mL)")
        ax.set_ylabel("predicted - reference (mL)")
        ax.grid(alpha=0.3)
    fig.suptitle("Bland-Altman: hemorrhage volume", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_path)


def volume_scatter(df: pd.DataFrame, out_path: str | os.PathLike, model_col: str = "system",
                   pred_col: str = "volume_pred_ml", ref_col: str = "reference_volume_ml") -> Path:
    """Predicted against reference volume for all models on one axis, with the identity line."""
    fig, ax = plt.subplots(figsize=(5.2, 5.0))
    colors = plt.get_cmap("tab10")
    hi = 0.0
    for j, system in enumerate(_systems(df, model_col)):
        sub = df[df[model_col].astype(str) == system]
        p, r = _num(sub[pred_col]), _num(sub[ref_col])
        ok = np.isfinite(p) & np.isfinite(r)
        if ok.any():
            hi = max(hi, float(np.max(p[ok])), float(np.max(r[ok])))
        ax.scatter(r[ok], p[ok], s=16, alpha=0.7, color=colors(j % 10), edgecolor="k", linewidth=0.3,
                   label=f"{system} (n={int(ok.sum())})")
    hi = hi * 1.05 or 1.0
    ax.plot([0, hi], [0, hi], color="k", lw=0.8, ls="--", label="identity")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("reference volume (mL)")
    ax.set_ylabel("predicted volume (mL)")
    ax.legend(fontsize=7, frameon=False)
    ax.grid(alpha=0.3)
    ax.set_title("Predicted vs reference hemorrhage volume", fontsize=10)
    return _save(fig, out_path)


# --------------------------------------------------------------------------------------------
# qualitative overlays

def choose_slice(ref: np.ndarray, pred: np.ndarray) -> int:
    """Axial index (axis 0) with the largest reference area; else largest prediction; else middle."""
    for mask in (ref, pred):
        area = (np.asarray(mask) > 0).reshape(mask.shape[0], -1).sum(axis=1)
        if area.max() > 0:
            return int(np.argmax(area))
    return int(ref.shape[0] // 2)


def overlay_rgb(ct_slice: np.ndarray, ref_slice: np.ndarray, pred_slice: np.ndarray,
                window: tuple[float, float] = (0.0, 100.0), alpha: float = 0.55) -> np.ndarray:
    """RGB float image: windowed CT with TP green, FP red, FN blue blended in."""
    lo, hi = window
    gray = np.clip((np.asarray(ct_slice, dtype=float) - lo) / (hi - lo), 0.0, 1.0)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    ref_b, pred_b = np.asarray(ref_slice) > 0, np.asarray(pred_slice) > 0
    for mask, color in ((ref_b & pred_b, TP_COLOR), (pred_b & ~ref_b, FP_COLOR), (ref_b & ~pred_b, FN_COLOR)):
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * np.asarray(color)
    return rgb


def overlay_png(ct: np.ndarray, ref: np.ndarray, pred: np.ndarray, out_path: str | os.PathLike,
                title: str | None = None, slice_index: int | None = None,
                window: tuple[float, float] = (0.0, 100.0), spacing: Sequence[float] | None = None,
                alpha: float = 0.55) -> Path:
    """Write a PNG of one CT slice with segmentation errors coloured: TP green, FP red, FN blue.

    ``ct``, ``ref`` and ``pred`` are 3D arrays ordered (z, y, x) — ``SimpleITK.GetArrayFromImage``
    order — on the same grid; label maps count as foreground where > 0. The slice is
    ``slice_index`` or the one with the largest reference area (largest predicted area when the
    reference is empty). Window 0-100 HU (blood is ~50-90 HU). ``spacing`` (z, y, x) in mm only
    sets the in-plane aspect ratio.
    """
    ct, ref, pred = np.asarray(ct), np.asarray(ref), np.asarray(pred)
    if ct.ndim == 2:
        ct, ref, pred = ct[None], ref[None], pred[None]
    if not (ct.shape == ref.shape == pred.shape) or ct.ndim != 3:
        raise ValueError(f"overlay_png: ct {ct.shape}, ref {ref.shape} and pred {pred.shape} must be equal 3D "
                         "(z, y, x) shapes")
    z = choose_slice(ref, pred) if slice_index is None else int(slice_index)
    if not 0 <= z < ct.shape[0]:
        raise ValueError(f"overlay_png: slice {z} outside 0..{ct.shape[0] - 1}")
    rgb = overlay_rgb(ct[z], ref[z], pred[z], window=window, alpha=alpha)
    aspect = float(spacing[1]) / float(spacing[2]) if spacing is not None else 1.0
    r, p = ref[z] > 0, pred[z] > 0
    counts = {"TP": int((r & p).sum()), "FP": int((p & ~r).sum()), "FN": int((r & ~p).sum())}
    h, w = rgb.shape[:2]
    scale = 6.0 / max(h, w * aspect, 1)
    fig, ax = plt.subplots(figsize=(max(2.5, w * scale) + 0.2, max(2.5, h * aspect * scale) + 0.7))
    ax.imshow(rgb, interpolation="nearest", aspect=aspect)
    ax.set_axis_off()
    ax.set_title(f"{title + ' - ' if title else ''}slice {z}", fontsize=9)
    ax.legend(handles=[Patch(color=TP_COLOR, label=f"TP ({counts['TP']} px)"),
                       Patch(color=FP_COLOR, label=f"FP ({counts['FP']} px)"),
                       Patch(color=FN_COLOR, label=f"FN ({counts['FN']} px)")],
              loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=7, frameon=False)
    return _save(fig, out_path)


def overlay_case(image_file: str | os.PathLike, ref_file: str | os.PathLike, pred_file: str | os.PathLike,
                 out_path: str | os.PathLike, title: str | None = None, **kwargs) -> Path:
    """:func:`overlay_png` from NIfTI files (CT, reference and predicted label maps)."""
    import SimpleITK as sitk

    arrays = []
    for f in (image_file, ref_file, pred_file):
        if not Path(f).is_file():
            raise FileNotFoundError(f"overlay: {f} does not exist")
        img = sitk.ReadImage(str(f))
        arrays.append(sitk.GetArrayFromImage(img))
    spacing = tuple(reversed(img.GetSpacing()))
    kwargs.setdefault("spacing", spacing)
    return overlay_png(arrays[0], arrays[1], arrays[2], out_path, title=title, **kwargs)
