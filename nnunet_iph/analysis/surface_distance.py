"""The surface-distance engine of the metrics: surface elements, bounding boxes and exact
nearest-surface distances (pure numpy/scipy). The metric API is :mod:`nnunet_iph.analysis.metrics`.

Two surface conventions (``surface=``):

``'surfel'`` (default)
    Area-weighted surface elements on the voxel-corner grid, exactly as DeepMind's
    ``surface_distance`` (``compute_surface_distances`` with its marching-cubes table of surfel
    areas; percentiles, means and NSD weight every element by its area), the convention Metrics
    Reloaded uses. On 0.4 x 0.4 x 5 mm head CT every boundary *voxel* of a slice cap stands for 0.16 mm²
    while a side voxel stands for 2 mm², so counting voxels lets the caps dominate; surfels weigh
    each face by its true area, so the metric does not depend on how many voxels a face happens to
    be cut into.
``'voxel'``
    Boundary voxels (mask voxels with a 6-neighbour outside the mask, 4-neighbour in 2D), every
    voxel weighing one, percentiles by linear interpolation: MONAI's ``compute_hausdorff_distance``
    / ``compute_average_surface_distance(symmetric=True)`` / ``compute_surface_dice`` and medpy.

HD95 (``hd95_variant=``): ``'max_directed'`` (default; DeepMind, MONAI, Metrics Reloaded) is the
larger of the two directed 95th percentiles; ``'pooled'`` (medpy) is the 95th percentile of both
directions' distances pooled. ASSD is always the pooled (area-weighted) mean of both directions.

Speed: all work happens in the bounding box of ``ref | pred`` (found on 64-bit words of the full
array). Distances come from the surface points only: the target surface is stored by (z, y) rows
(distance along x to the row's nearest point, tabulated over the row's span), and each source point
visits rows by increasing (dz sz)² + (dy sy)² until no further row can be nearer. Points still far
from the other surface continue with a doubling search radius, or, when that would visit more rows
than the target has, are compared with the target's non-empty rows (scipy's exact EDT of the box
only if even that costs more). The squared distance is summed in scipy's EDT order, so results are
bit-identical to DeepMind's when the nearest point is the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy import ndimage

from nnunet_iph.analysis.metric_defaults import (DEFAULT_HD95_VARIANT, DEFAULT_PERCENTILE, DEFAULT_SURFACE,
                                                 HD95_VARIANTS, SURFACES)


# --------------------------------------------------------------------------------------------
# lookup tables (DeepMind surface-distance)

@lru_cache(maxsize=1)
def _surfel_normals() -> tuple[np.ndarray, np.ndarray]:
    """All triangle normals of the 256 codes stacked (n, 3), and the code each belongs to."""
    from nnunet_iph.analysis._surfel_tables import NEIGHBOUR_CODE_TO_NORMALS

    normals = np.array([n for code in NEIGHBOUR_CODE_TO_NORMALS for n in code], float)
    owner = np.repeat(np.arange(256), [len(code) for code in NEIGHBOUR_CODE_TO_NORMALS])
    return normals, owner


@lru_cache(maxsize=256)
def _surfel_area_table_3d(spacing: tuple[float, float, float]) -> np.ndarray:
    """Area (mm²) of the surfels of each 2x2x2 neighbourhood code, as DeepMind computes it: each
    triangle normal scaled by the face areas of the spacing, its length summed per code."""
    normals, owner = _surfel_normals()
    s0, s1, s2 = spacing
    n = np.empty_like(normals)
    n[:, 0] = normals[:, 0] * s1 * s2
    n[:, 1] = normals[:, 1] * s0 * s2
    n[:, 2] = normals[:, 2] * s0 * s1
    areas = np.sqrt(n[:, 0] * n[:, 0] + n[:, 1] * n[:, 1] + n[:, 2] * n[:, 2])
    table = np.zeros(256)
    np.add.at(table, owner, areas)
    return table


@lru_cache(maxsize=256)
def _contour_length_table_2d(spacing: tuple[float, float]) -> np.ndarray:
    """Length (mm) of the contour pieces of each 2x2 neighbourhood code (DeepMind's 2D table)."""
    table = np.zeros(16)
    vertical, horizontal = spacing[0], spacing[1]
    diag = 0.5 * math.sqrt(spacing[0] ** 2 + spacing[1] ** 2)
    for bits, value in (("0001", diag), ("0010", diag), ("0011", horizontal), ("0100", diag),
                        ("0101", vertical), ("0110", 2 * diag), ("0111", diag), ("1000", diag),
                        ("1001", 2 * diag), ("1010", vertical), ("1011", diag), ("1100", horizontal),
                        ("1101", diag), ("1110", diag)):
        table[int(bits, 2)] = value
    return table


# --------------------------------------------------------------------------------------------
# bounding box and surfaces

def check_spacing(spacing: Sequence[float], ndim: int) -> tuple[float, ...]:
    if ndim not in (2, 3):
        raise ValueError(f"masks must be 2D or 3D, not {ndim}D")
    sp = tuple(float(s) for s in np.atleast_1d(np.asarray(spacing, dtype=float)))
    if len(sp) == 1:
        sp = sp * ndim
    if len(sp) != ndim or not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing {spacing} does not fit {ndim}D masks (one positive value per axis,"
                         " in the array's axis order)")
    return sp


def nonzero_bbox(array: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box (slices) of the non-zero voxels, or None when there are none.

    Reads the array as 64-bit words where rows allow it: a 40x512x512 uint8 mask is 1.3 M words,
    so the box costs about one vectorised max-reduction over the array instead of a comparison,
    a copy and a reduction per axis.
    """
    a = np.asarray(array)
    if a.ndim == 0 or a.size == 0:
        return None
    if not a.flags.c_contiguous:
        a = np.ascontiguousarray(a)
    nbytes = a.shape[-1] * a.itemsize
    words = a.view(np.uint8).reshape(a.shape[:-1] + (nbytes,))
    wsize = 8 if nbytes % 8 == 0 else 1
    if wsize == 8:
        words = words.view(np.uint64)
    lo: list[int] = []
    hi: list[int] = []
    block = words
    for axis in range(a.ndim - 1):  # leading axes, each inside the range found so far
        proj = block.reshape(block.shape[0], -1).max(axis=1) if axis == 0 else \
            block.max(axis=0).reshape(block.shape[1], -1).max(axis=1)
        nz = np.flatnonzero(proj)
        if nz.size == 0:
            return None
        lo.append(int(nz[0]))
        hi.append(int(nz[-1]) + 1)
        block = block[slice(lo[-1], hi[-1])] if axis == 0 else block[:, lo[-1]:hi[-1]]
        if axis == 1:
            break
    # last axis: words first, then the exact column inside the first and last word
    inner = block.max(axis=tuple(range(block.ndim - 1)))  # no reshape: the block is a strided view
    wz = np.flatnonzero(inner)
    if wz.size == 0:
        return None
    sub = a[tuple(slice(l, h) for l, h in zip(lo, hi))]  # a view: no copy of the full-width rows
    lead = tuple(range(a.ndim - 1))

    def cols(w: int) -> np.ndarray:
        c0, c1 = (w * wsize) // a.itemsize, ((w + 1) * wsize - 1) // a.itemsize + 1
        return c0 + np.flatnonzero((sub[..., c0:c1] != 0).any(axis=lead))

    first, last = cols(int(wz[0])), cols(int(wz[-1]))
    if first.size == 0 or last.size == 0:  # only -0.0 or similar in those words
        cz = np.flatnonzero((sub != 0).any(axis=lead))
        if cz.size == 0:
            return None
        first, last = cz, cz
    lo.append(int(first[0]))
    hi.append(int(last[-1]) + 1)
    return tuple(slice(l, h) for l, h in zip(lo, hi))


def union_bbox(*boxes: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    boxes = [b for b in boxes if b is not None]
    if not boxes:
        return None
    return tuple(slice(min(b[i].start for b in boxes), max(b[i].stop for b in boxes))
                 for i in range(len(boxes[0])))


def _pad1(mask: np.ndarray) -> np.ndarray:
    padded = np.zeros(tuple(s + 2 for s in mask.shape), np.uint8)
    padded[(slice(1, -1),) * mask.ndim] = mask
    return padded


def _boundary_voxels(mask: np.ndarray) -> np.ndarray:
    """Mask voxels with a face neighbour (6 in 3D, 4 in 2D) outside the mask or the image."""
    p = _pad1(mask).view(bool)
    c = (slice(1, -1),) * mask.ndim
    interior = mask.copy()
    for axis in range(mask.ndim):
        for sl in (slice(None, -2), slice(2, None)):
            idx = list(c)
            idx[axis] = sl
            interior &= p[tuple(idx)]
    return mask & ~interior


def _corner_codes(mask: np.ndarray) -> np.ndarray:
    """Neighbourhood code of every voxel corner (DeepMind's 2x2(x2) kernel), grid = shape + 1."""
    p = _pad1(mask)
    code = p
    for axis in range(mask.ndim - 1, -1, -1):  # last axis first: low index = high bit
        lo = [slice(None)] * mask.ndim
        hi = [slice(None)] * mask.ndim
        lo[axis] = slice(None, -1)
        hi[axis] = slice(1, None)
        shift = 1 << (mask.ndim - 1 - axis)
        code = code[tuple(lo)] * np.uint8(1 << shift) + code[tuple(hi)]
    return code


def _surface(mask: np.ndarray, spacing: tuple[float, ...], surface: str
             ) -> tuple[np.ndarray, np.ndarray | None]:
    """Surface points as a boolean grid (always 3D: 2D masks get a leading axis of one) and their
    weights in C order (None for boundary voxels, all weighing one)."""
    if surface == "voxel":
        border = _boundary_voxels(mask)
        return (border if border.ndim == 3 else border[None]), None
    code = _corner_codes(mask)
    full = 255 if mask.ndim == 3 else 15
    border = (code != 0) & (code != full)
    table = _surfel_area_table_3d(spacing) if mask.ndim == 3 else _contour_length_table_2d(spacing)
    return (border if border.ndim == 3 else border[None]), table[code[border]]


# --------------------------------------------------------------------------------------------
# exact distances from surface points to the other surface

_LOOP_OFFSETS = 96          # (dz, dy) row offsets visited by the pruned search before the far path
_BATCHES = (2, 4, 8, 16, 32, 34)  # offsets per vectorised step (sums to _LOOP_OFFSETS)


_MAX_CELLS = 1 << 22  # elements per (row offsets x points) temporary: ~32 MB as float64
_NO_ROW = 1 << 29  # x-distance (voxels) reported for a row without target points


@dataclass
class _Rows:
    """The target surface by rows, for "distance along x to the nearest target point of row r".

    Only the span [xmin, xmax] of each non-empty (z, y) row is tabulated (ragged, ``table``);
    outside it the distance is that to the nearer end plus the table value there. Row R (the
    last) is the empty sentinel row. ``rid`` maps a padded (z, y) to its row. Built from the point
    coordinates, so the cost follows the surface, not the box.
    """
    table: np.ndarray  # (S + 1,) int32: distance inside the spans; last cell: _NO_ROW
    base: np.ndarray   # (R + 1,) table index of x = 0 in the row (ptr - xmin)
    xmin: np.ndarray   # (R + 1,)
    xmax: np.ndarray   # (R + 1,)
    rid: np.ndarray    # ((nz + 2 pad_z) * (ny + 2 pad_y),) row of a padded (z, y), R when empty
    row_z: np.ndarray  # (R,)
    row_y: np.ndarray
    pad_z: int
    pad_y: int
    nx: int = 0
    dense: np.ndarray | None = None  # (R + 1) * nx lookups, when that is cheaper than many queries

    def densify(self, nx: int) -> None:
        """Tabulate every (row, x): one gather per lookup afterwards."""
        rowid = np.repeat(np.arange(self.xmin.size), nx)
        x = np.tile(np.arange(nx), self.xmin.size)
        self.dense = self._ragged(rowid, x)
        self.nx = nx

    def lookup(self, rowid: np.ndarray, x: np.ndarray) -> np.ndarray:
        """x-distance in voxels (int64) from column x to the nearest target point of row ``rowid``."""
        if self.dense is not None:
            return self.dense[rowid * self.nx + x]
        return self._ragged(rowid, x)

    def _ragged(self, rowid: np.ndarray, x: np.ndarray) -> np.ndarray:
        lo, hi = self.xmin[rowid], self.xmax[rowid]
        xc = np.minimum(np.maximum(x, lo), hi)
        out = self.table[self.base[rowid] + xc].astype(np.int64)
        xc -= x
        out += np.abs(xc)
        return out


def _target_rows(pts: "_Points", shape: tuple[int, int, int], pad_z: int, pad_y: int) -> _Rows:
    nz, ny, nx = shape
    key = pts.row  # sorted (C order), x sorted within a row
    new = np.empty(key.size, bool)
    new[0] = True
    np.not_equal(key[1:], key[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    ends = np.empty_like(starts)
    ends[:-1] = starts[1:] - 1
    ends[-1] = key.size - 1
    n_rows = starts.size
    xmin = np.zeros(n_rows + 1, np.intp)
    xmax = np.zeros(n_rows + 1, np.intp)
    xmin[:-1], xmax[:-1] = pts.x[starts], pts.x[ends]
    span = xmax[:-1] - xmin[:-1] + 1
    ptr = np.zeros(n_rows + 1, np.intp)
    np.cumsum(span, out=ptr[1:])
    size = int(ptr[-1])
    # each span starts and ends with a target point, so 1D running max/min never leave their row
    pos = ptr[np.cumsum(new) - 1] + (pts.x - xmin[np.cumsum(new) - 1])
    idx = np.arange(size, dtype=np.int32)
    prev = np.full(size, -1, np.int32)
    prev[pos] = pos
    np.maximum.accumulate(prev, out=prev)
    nxt = np.full(size, size, np.int32)
    nxt[pos] = pos
    nxt = np.minimum.accumulate(nxt[::-1])[::-1]
    table = np.empty(size + 1, np.int32)
    np.minimum(idx - prev, nxt - idx, out=table[:-1])
    table[-1] = _NO_ROW
    base = np.empty(n_rows + 1, np.intp)
    base[:-1] = ptr[:-1] - xmin[:-1]
    base[-1] = size  # sentinel row: xmin = xmax = 0 -> table[size]
    row_z, row_y = pts.z[starts], pts.y[starts]
    py_len = ny + 2 * pad_y
    rid = np.full((nz + 2 * pad_z) * py_len, n_rows, np.intp)
    rid[(row_z + pad_z) * py_len + row_y + pad_y] = np.arange(n_rows)
    return _Rows(table, base, xmin, xmax, rid, row_z, row_y, pad_z, pad_y)


@dataclass
class _Points:
    """Surface points of one mask on the (z, y, x) grid, in C order."""
    flat: np.ndarray
    row: np.ndarray  # z * ny + y
    z: np.ndarray
    y: np.ndarray
    x: np.ndarray

    @classmethod
    def from_grid(cls, grid: np.ndarray) -> "_Points":
        flat = np.flatnonzero(grid)
        _, ny, nx = grid.shape
        row = flat // nx
        z = row // ny
        return cls(flat, row, z, row - z * ny, flat - row * nx)

    @property
    def size(self) -> int:
        return self.flat.size


@lru_cache(maxsize=256)
def _row_offsets(sz: float, sy: float, max_dz: int, max_dy: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The first ``_LOOP_OFFSETS`` (dz, dy) row offsets (without (0, 0)) by distance, their squared
    distance (mm²), and a bound: every offset not returned is at least that far (squared).

    Offsets beyond the grid (``max_dz``, ``max_dy``) can hold no point and are left out.
    """
    radius = (_LOOP_OFFSETS / 2 + 1) * min(sz, sy)  # the first offsets all lie within this radius
    bz, by = min(int(radius // sz) + 1, max_dz), min(int(radius // sy) + 1, max_dy)
    dz, dy = np.meshgrid(np.arange(-bz, bz + 1), np.arange(-by, by + 1), indexing="ij")
    dz, dy = dz.ravel(), dy.ravel()
    base = (dz * sz) ** 2 + (dy * sy) ** 2
    order = np.lexsort((dy, dz, base))[1:]  # drop (0, 0)
    dz, dy, base = dz[order], dy[order], base[order]
    bound = math.inf
    if len(base) > _LOOP_OFFSETS:
        bound = float(base[_LOOP_OFFSETS])
    if bz < max_dz:
        bound = min(bound, ((bz + 1) * sz) ** 2)
    if by < max_dy:
        bound = min(bound, ((by + 1) * sy) ** 2)
    n = min(_LOOP_OFFSETS, len(base))
    return dz[:n], dy[:n], base[:n], bound


def _directed_distances(src: _Points, tgt: _Points, shape: tuple[int, int, int],
                        spacing: tuple[float, float, float]) -> np.ndarray:
    """Euclidean distance (mm) from each source point to the nearest target point.

    Points are (z, y, x) index arrays in C order on a grid of ``shape``; the target is not empty.
    Exact: the squared distance (dz sz)² + (dy sy)² + (dx sx)² is minimised over rows, the x part
    being the distance to the nearest target point of that row. Rows are visited by increasing
    (dz sz)² + (dy sy)², and a point stops as soon as no further row can be nearer; the sum is
    formed in scipy's EDT order, so the same nearest point gives a bit-identical distance.
    """
    sz, sy, sx = spacing
    nz, ny, nx = shape
    dzs, dys, base, bound = _row_offsets(sz, sy, nz - 1, ny - 1)
    pad_z = int(np.abs(dzs).max(initial=0))
    pad_y = int(np.abs(dys).max(initial=0))
    rows = _target_rows(tgt, shape, pad_z, pad_y)
    if rows.xmin.size * nx <= 4 * src.size:  # small box: a full table is cheaper than the queries
        rows.densify(nx)
    pz, py, px = src.z, src.y, src.x
    py_len = ny + 2 * pad_y
    prow = (pz + pad_z) * py_len + (py + pad_y)
    best = rows.lookup(rows.rid[prow], px) * sx
    best *= best
    deltas = dzs * py_len + dys
    active = np.flatnonzero(best > base[0]) if len(base) else np.empty(0, np.intp)
    start = 0
    for size in _BATCHES:
        if active.size == 0 or start >= len(base):
            break
        stop = min(start + size, len(base))
        _relax(best, active, deltas[start:stop], base[start:stop], prow, px, rows.rid, rows, sx)
        start = stop
        if start < len(base):
            active = active[best[active] > base[start]]
    left = np.flatnonzero(best > bound)
    if left.size:
        best[left] = _far_sq_distances(pz[left], py[left], px[left], best[left], bound, rows, shape, spacing)
    return np.sqrt(best, out=best)


def _relax(best: np.ndarray, active: np.ndarray, deltas: np.ndarray, base: np.ndarray, prow: np.ndarray,
           px: np.ndarray, rid: np.ndarray, rows: _Rows, sx: float) -> None:
    """``best[active]`` = min(itself, squared distance to the nearest target point in each row
    offset ``deltas`` (whose (dz, dy) part is ``base``)), in chunks of points so that the
    (offsets x points) temporaries stay below ``_MAX_CELLS`` elements even when a prediction
    covers most of the image (millions of surface points)."""
    chunk = max(1, _MAX_CELLS // max(1, deltas.size))
    for lo in range(0, active.size, chunk):
        pts = active[lo:lo + chunk]
        rowid = rid[deltas[:, None] + prow[pts][None, :]]
        cand = rows.lookup(rowid, np.broadcast_to(px[pts][None, :], rowid.shape)) * sx
        cand *= cand
        cand += base[:, None]
        best[pts] = np.minimum(best[pts], np.minimum.reduce(cand, axis=0))


def _far_sq_distances(pz, py, px, upper, bound, rows: _Rows, shape, spacing) -> np.ndarray:
    """Exact squared distances for the points the pruned search left (farther than ``bound``).

    The row search continues with a radius that doubles each round (points finish once their
    distance is within the radius searched); when a round would visit more rows than the target
    has non-empty rows, the remaining points (e.g. a false-positive blob across the box) are
    compared with the non-empty target rows directly.
    """
    sz, sy, _ = spacing
    nz, ny, _ = shape
    out = np.array(upper, float)
    todo = np.arange(out.size)
    radius = math.sqrt(bound)
    while todo.size:
        radius *= 2.0
        n_offsets = min(math.pi * radius * radius / (sz * sy) + 2 * radius * (1 / sz + 1 / sy) + 1,
                        (2 * nz - 1) * (2 * ny - 1))
        if n_offsets >= rows.row_z.size:
            out[todo] = _row_search(pz[todo], py[todo], px[todo], out[todo], rows, shape, spacing)
            break
        out[todo] = _offset_search(pz[todo], py[todo], px[todo], out[todo], radius, rows, shape, spacing)
        todo = todo[out[todo] > radius * radius]
    return out


def _offset_search(pz, py, px, best, radius, rows: _Rows, shape, spacing) -> np.ndarray:
    """The pruned row search over every (dz, dy) row offset within ``radius`` mm (exact for points
    whose upper bound is at most radius²)."""
    sz, sy, sx = spacing
    nz, ny, nx = shape
    bz, by = min(nz - 1, int(radius // sz)), min(ny - 1, int(radius // sy))
    dz, dy = np.meshgrid(np.arange(-bz, bz + 1), np.arange(-by, by + 1), indexing="ij")
    dz, dy = dz.ravel(), dy.ravel()
    base = (dz * sz) ** 2 + (dy * sy) ** 2
    keep = base <= radius * radius
    dz, dy, base = dz[keep], dy[keep], base[keep]
    order = np.argsort(base, kind="stable")
    dz, dy, base = dz[order], dy[order], base[order]
    py_len = ny + 2 * by
    rid = np.full((nz + 2 * bz) * py_len, rows.row_z.size, np.intp)  # padded for this radius
    rid[(rows.row_z + bz) * py_len + rows.row_y + by] = np.arange(rows.row_z.size)
    prow = (pz + bz) * py_len + (py + by)
    deltas = dz * py_len + dy
    best = np.array(best, float)
    active = np.flatnonzero(best > base[0]) if base.size else np.empty(0, np.intp)
    start, size = 0, 16
    while active.size and start < base.size:
        stop = min(start + size, base.size)
        _relax(best, active, deltas[start:stop], base[start:stop], prow, px, rid, rows, sx)
        start, size = stop, size * 2
        if start < base.size:
            active = active[best[active] > base[start]]
    return best


def _row_search(pz, py, px, upper, rows: _Rows, shape, spacing) -> np.ndarray:
    """Points far from the target: compared with every non-empty target row within their bound
    (in chunks by increasing bound), or scipy's exact EDT of the box when that is cheaper."""
    sz, sy, sx = spacing
    nz, ny, nx = shape
    order = np.argsort(upper, kind="stable")
    out = np.empty(len(pz))
    sentinel_mm = _NO_ROW * sx
    plans = []
    cost = 0
    for s in range(0, len(order), 256):
        sel = order[s:s + 256]
        r = math.sqrt(float(upper[sel[-1]]))
        keep = np.ones(rows.row_z.size, bool)
        if r < sentinel_mm:  # otherwise no target row met yet: all rows are candidates
            zlo, zhi = pz[sel].min() - r / sz, pz[sel].max() + r / sz
            ylo, yhi = py[sel].min() - r / sy, py[sel].max() + r / sy
            keep = (rows.row_z >= zlo) & (rows.row_z <= zhi) & (rows.row_y >= ylo) & (rows.row_y <= yhi)
        cand = np.flatnonzero(keep)
        plans.append((sel, cand))
        cost += sel.size * cand.size
    if cost > 8 * nz * ny * nx:
        target = np.zeros(shape, bool)
        n_rows = rows.row_z.size
        span = rows.xmax[:-1] - rows.xmin[:-1] + 1
        row_of_cell = np.repeat(np.arange(n_rows), span)
        x_of_cell = np.arange(int(span.sum())) - rows.base[row_of_cell]
        hit = rows.table[:-1] == 0
        target[rows.row_z[row_of_cell[hit]], rows.row_y[row_of_cell[hit]], x_of_cell[hit]] = True
        edt = ndimage.distance_transform_edt(~target, sampling=spacing)
        return edt[pz, py, px] ** 2
    for sel, cand in plans:
        rz, ry = rows.row_z[cand], rows.row_y[cand]
        rowid = np.broadcast_to(cand[None, :], (sel.size, cand.size))
        tx = rows.lookup(rowid, np.broadcast_to(px[sel, None], rowid.shape)) * sx
        tx *= tx
        total = (((rz[None, :] - pz[sel, None]) * sz) ** 2 + ((ry[None, :] - py[sel, None]) * sy) ** 2) + tx
        out[sel] = total.min(axis=1)
    return out


def _weighted_percentile(d: np.ndarray, w: np.ndarray, q: float) -> float:
    """DeepMind's area-weighted percentile without sorting everything.

    DeepMind sorts by (distance, area) and returns the first distance whose cumulated area share
    reaches q/100 (the largest one if rounding keeps the share below). Cumulated weights per
    distance bin (bincount) locate the bin holding that element; only that bin is sorted.
    """
    total = np.sum(w)
    top = float(d.max())
    if d.size <= 512 or top == 0.0:
        order = np.lexsort((w, d))
        cum = np.cumsum(w[order]) / total
        return float(d[order][min(int(np.searchsorted(cum, q / 100.0)), d.size - 1)])
    nbins = min(4096, d.size)
    key = (d * ((nbins - 1) / top)).astype(np.intp)  # monotone in d
    cw = np.cumsum(np.bincount(key, weights=w, minlength=nbins))
    b = int(np.searchsorted(cw / total, q / 100.0))
    sel = np.flatnonzero(key == b) if b < nbins else np.empty(0, np.intp)
    if sel.size == 0:  # only through rounding: the next filled bin, or the maximum
        later = np.flatnonzero(key > b)
        if later.size == 0:
            return top
        b = int(key[later].min())
        sel = later[key[later] == b]
    order = np.lexsort((w[sel], d[sel]))
    cum = ((cw[b - 1] if b else 0.0) + np.cumsum(w[sel][order])) / total
    return float(d[sel][order][min(int(np.searchsorted(cum, q / 100.0)), sel.size - 1)])


@dataclass
class SurfaceDistances:
    """Distances (mm) from each surface element of one mask to the other surface, with weights.

    ``weights_*`` are the surfel areas (mm², mm in 2D) in the 'surfel' convention and None (all one)
    in the 'voxel' convention. Both directions are empty when both masks are empty; one direction
    is empty when that mask is empty (its distances are then undefined, not stored).
    """
    ref_to_pred: np.ndarray
    pred_to_ref: np.ndarray
    weights_ref: np.ndarray | None
    weights_pred: np.ndarray | None
    surface: str

    @property
    def empty_ref(self) -> bool:
        return self.ref_to_pred.size == 0

    @property
    def empty_pred(self) -> bool:
        return self.pred_to_ref.size == 0

    def _percentile(self, d: np.ndarray, w: np.ndarray | None, q: float) -> float:
        if d.size == 0:
            return math.nan
        if w is None:
            return float(np.percentile(d, q))
        return _weighted_percentile(d, w, q)

    def directed_percentiles(self, q: float = DEFAULT_PERCENTILE) -> tuple[float, float]:
        """(ref -> pred, pred -> ref) ``q``-th percentiles."""
        return (self._percentile(self.ref_to_pred, self.weights_ref, q),
                self._percentile(self.pred_to_ref, self.weights_pred, q))

    def robust_hausdorff(self, q: float = DEFAULT_PERCENTILE, variant: str = DEFAULT_HD95_VARIANT) -> float:
        if variant not in HD95_VARIANTS:
            raise ValueError(f"hd95 variant must be one of {HD95_VARIANTS}, not {variant!r}")
        if variant == "max_directed":
            return max(self.directed_percentiles(q))
        d = np.concatenate([self.ref_to_pred, self.pred_to_ref])
        w = None if self.weights_ref is None else np.concatenate([self.weights_ref, self.weights_pred])
        return self._percentile(d, w, q)

    def hausdorff(self) -> float:
        return float(max(self.ref_to_pred.max(initial=-math.inf), self.pred_to_ref.max(initial=-math.inf)))

    def _sum(self, d: np.ndarray, w: np.ndarray | None) -> tuple[float, float]:
        if w is None:
            return float(d.sum()), float(d.size)
        return float(np.sum(d * w)), float(np.sum(w))

    def directed_averages(self) -> tuple[float, float]:
        """(ref -> pred, pred -> ref) mean distances (area-weighted for surfels)."""
        out = []
        for d, w in ((self.ref_to_pred, self.weights_ref), (self.pred_to_ref, self.weights_pred)):
            s, n = self._sum(d, w)
            out.append(s / n if n else math.nan)
        return out[0], out[1]

    def average_symmetric(self) -> float:
        """Pooled mean of both directions: (sum d_ref + sum d_pred) / (|S_ref| + |S_pred|)."""
        s1, n1 = self._sum(self.ref_to_pred, self.weights_ref)
        s2, n2 = self._sum(self.pred_to_ref, self.weights_pred)
        return (s1 + s2) / (n1 + n2) if n1 + n2 else math.nan

    def surface_dice(self, tolerance_mm: float) -> float:
        """Share of both surfaces (by area for surfels) within ``tolerance_mm`` of the other."""
        total = 0.0
        within = 0.0
        for d, w in ((self.ref_to_pred, self.weights_ref), (self.pred_to_ref, self.weights_pred)):
            ok = d <= tolerance_mm
            if w is None:
                within += float(np.count_nonzero(ok))
                total += float(d.size)
            else:
                within += float(np.sum(w[ok]))
                total += float(np.sum(w))
        return within / total if total else math.nan


def cropped_surface_distances(ref: np.ndarray, pred: np.ndarray, spacing: tuple[float, ...],
                               surface: str) -> SurfaceDistances:
    """Surface distances of two boolean masks already cropped to (at least) their union's box."""
    border_r, w_r = _surface(ref, spacing, surface)
    border_p, w_p = _surface(pred, spacing, surface)
    pts_r, pts_p = _Points.from_grid(border_r), _Points.from_grid(border_p)
    n_r, n_p = pts_r.size, pts_p.size
    if n_r == 0 or n_p == 0:  # nothing to measure against: undefined (inf)
        return SurfaceDistances(np.full(n_r, math.inf), np.full(n_p, math.inf), w_r, w_p, surface)
    sp3 = tuple(spacing) if len(spacing) == 3 else (1.0,) + tuple(spacing)
    return SurfaceDistances(_directed_distances(pts_r, pts_p, border_r.shape, sp3),
                            _directed_distances(pts_p, pts_r, border_r.shape, sp3), w_r, w_p, surface)


def surface_distances(ref: np.ndarray, pred: np.ndarray, spacing: Sequence[float],
                      surface: str = DEFAULT_SURFACE) -> SurfaceDistances:
    """Distances between the surfaces of two binary masks (non-zero = foreground).

    ``spacing`` is in the array's axis order (for SimpleITK arrays, z, y, x: see
    :func:`spacing_from_sitk`). The work is restricted to the bounding box of ``ref | pred``.
    A direction whose source mask is non-empty but whose target is empty gets ``inf`` distances.
    """
    ref = np.asarray(ref)
    pred = np.asarray(pred)
    if ref.shape != pred.shape:
        raise ValueError(f"reference shape {ref.shape} != prediction shape {pred.shape}")
    if surface not in SURFACES:
        raise ValueError(f"surface must be one of {SURFACES}, not {surface!r}")
    sp = check_spacing(spacing, ref.ndim)
    box = union_bbox(nonzero_bbox(ref), nonzero_bbox(pred))
    if box is None:
        return SurfaceDistances(np.empty(0), np.empty(0), None if surface == "voxel" else np.empty(0),
                                None if surface == "voxel" else np.empty(0), surface)
    return cropped_surface_distances(ref[box] != 0, pred[box] != 0, sp, surface)



__all__ = ["SurfaceDistances", "surface_distances", "cropped_surface_distances", "nonzero_bbox", "union_bbox",
           "check_spacing"]
