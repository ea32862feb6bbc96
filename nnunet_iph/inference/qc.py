"""QC picture of one case: the axial slices with hemorrhage (and a few around them), the CT on the
brain window (W80/L40) with the mask's outline in red, the volumes in the title.

Slices are shown in radiological convention (patient's right on the left of the picture, anterior
at the top), read from the direction matrix, whatever the storage orientation. Each tile is labelled
with its slice index along the axial array axis (the ``abc2_slice`` numbering of volumes.csv); the
ABC/2 slice is marked. The montage is composed in numpy and drawn once with matplotlib's Agg
canvas (no pyplot, no global backend switch), which keeps a picture well under a second.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
from scipy import ndimage

from nnunet_iph.inference.abc2 import axial_axis
from nnunet_iph.planning.orientation import physical_axes_of_array

WINDOW_LEVEL_HU = (80.0, 40.0)
MARGIN_SLICES = 2  # slices shown below and above the hemorrhage
MAX_TILES = 20
TILE_PX = 192  # longest tile side after integer downsampling
MIN_TILE_PX = 128
MIN_WIDTH_PX = 640
TITLE_PX = 36
COLUMNS = 5
OUTLINE_RGB = (1.0, 0.15, 0.15)


def display_order(direction: Sequence[float] | np.ndarray) -> tuple[list[int], list[bool]]:
    """Array axes for (inferior->superior, anterior->posterior, right->left) and which to reverse.

    A scan rotated in-plane so that no array axis follows L-R / A-P keeps its stored in-plane order.
    """
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    try:
        mapping = physical_axes_of_array(d)  # array axis -> physical axis (LPS)
    except ValueError:
        axis = axial_axis(d)
        return [axis] + [a for a in range(3) if a != axis], [d[2, 2 - axis] < 0, False, False]
    order = [mapping.index(p) for p in (2, 1, 0)]
    return order, [d[mapping[a], 2 - a] < 0 for a in order]  # index runs against +S / +P / +L


def display_view(arr: np.ndarray, order: Sequence[int], flips: Sequence[bool]) -> np.ndarray:
    """A view (no copy) of a (z, y, x) array in display order."""
    view = arr.transpose(order)
    for axis, flip in enumerate(flips):
        if flip:
            view = np.flip(view, axis=axis)
    return view


def choose_slices(areas: np.ndarray, margin: int = MARGIN_SLICES, max_tiles: int = MAX_TILES) -> list[int]:
    """Slices with lesion voxels plus ``margin`` on each side; evenly thinned (keeping the slice of
    largest area) when there are more than ``max_tiles``; six central slices when nothing is there."""
    n = len(areas)
    hit = np.flatnonzero(areas)
    if hit.size == 0:
        return sorted(set(np.linspace(0, n - 1, min(n, 6)).round().astype(int).tolist()))
    keep = sorted({k for h in hit for k in range(max(0, h - margin), min(n, h + margin + 1))})
    if len(keep) <= max_tiles:
        return keep
    picked = {keep[i] for i in np.linspace(0, len(keep) - 1, max_tiles - 1).round().astype(int)}
    return sorted(picked | {int(np.argmax(areas))})


def _max_pool(img: np.ndarray, f: int) -> np.ndarray:
    if f == 1:
        return img
    h, w = (img.shape[0] // f) * f, (img.shape[1] // f) * f
    return img[:h, :w].reshape(h // f, f, w // f, f).any(axis=(1, 3))


def render_tile(ct: np.ndarray, mask: np.ndarray, factor: int) -> np.ndarray:
    """RGB tile: windowed CT (every ``factor``-th pixel: block means cost 3x the whole picture) and the
    mask outline, max-pooled so that a one-voxel lesion stays visible."""
    width, level = WINDOW_LEVEL_HU
    m = _max_pool(mask != 0, factor)
    sub = ct[:m.shape[0] * factor:factor, :m.shape[1] * factor:factor].astype(np.float32)
    gray = np.clip((sub - (level - width / 2)) / width, 0, 1)
    edge = m & ~ndimage.binary_erosion(m)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    rgb[edge] = OUTLINE_RGB
    return rgb


def _stretch_rows(img: np.ndarray, aspect: float) -> np.ndarray:
    """Nearest-neighbour resampling of the rows so that pixels are square on screen."""
    if abs(aspect - 1.0) < 1e-3:
        return img
    rows = np.minimum((np.arange(int(round(img.shape[0] * aspect))) / aspect).astype(int), img.shape[0] - 1)
    return img[rows]


def render_qc(ct: np.ndarray, mask: np.ndarray, spacing_xyz: Sequence[float],
              direction: Sequence[float] | np.ndarray, title: str, abc2_slice: int | None = None) -> bytes:
    """PNG bytes of the montage. ``ct`` and ``mask`` are (z, y, x) arrays on the same grid."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    order, flips = display_order(direction)
    ct_v, mask_v = display_view(ct, order, flips), display_view(mask, order, flips)
    row_mm, col_mm = (float(spacing_xyz[2 - a]) for a in order[1:])
    n = ct_v.shape[0]
    slices = choose_slices((mask_v != 0).sum(axis=(1, 2)))
    factor = max(1, int(np.ceil(max(ct_v.shape[1:]) / TILE_PX)))
    zoom = max(1, MIN_TILE_PX // max(ct_v.shape[1:]))  # small images: enlarge (nearest neighbour)
    tiles = [_stretch_rows(render_tile(ct_v[k], mask_v[k], factor), row_mm / col_mm) for k in slices]
    tiles = [t.repeat(zoom, axis=0).repeat(zoom, axis=1) for t in tiles]
    th, tw = tiles[0].shape[:2]
    cols = min(COLUMNS, len(tiles))
    rows = -(-len(tiles) // cols)
    montage = np.zeros((rows * th, cols * tw, 4), dtype=np.uint8)
    montage[..., 3] = 255
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        montage[r * th:(r + 1) * th, c * tw:(c + 1) * tw, :3] = (tile * 255).round()
    dpi, band = 100, TITLE_PX
    height, width = montage.shape[0] + band, max(montage.shape[1], MIN_WIDTH_PX)  # room for the title
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    fig.figimage(montage, xo=0, yo=0, origin="upper")  # pixels as they are: no resampling (bottom-left)
    for i, k in enumerate(slices):
        r, c = divmod(i, cols)
        index = n - 1 - k if flips[0] else k
        mark = "  ABC/2" if abc2_slice is not None and index == abc2_slice else ""
        fig.text((c * tw + 4) / width, 1 - (band + r * th + 4) / height, f"{index}{mark}", color="yellow",
                 fontsize=8, va="top", ha="left")
    fig.text(0.5, 1 - 6 / height, title, fontsize=10, va="top", ha="center", wrap=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, pil_kwargs={"compress_level": 3})  # 2x faster than 6, 10 % larger
    return buf.getvalue()
