"""Metrics: hand-computed values, brute-force distances, empty policy, labels, lesions, and agreement
with DeepMind surface-distance / MONAI / medpy (when installed; they are benchmark-only)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from nnunet_iph.analysis import metrics as M
from nnunet_iph.analysis import surface_distance as SD
from nnunet_iph.analysis.metrics import (case_metrics, image_diagonal_mm, lesion_detection, metric_columns,
                                         nonzero_bbox, surface_distances, surface_metrics)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# --------------------------------------------------------------------------------------------
# helpers

def blob(shape, centre, radii):
    grid = np.indices(shape).astype(float)
    r = sum(((g - c) / s) ** 2 for g, c, s in zip(grid, centre, radii))
    return r <= 1.0


def random_blobs(rng, shape, n=3):
    m = np.zeros(shape, bool)
    for _ in range(n):
        centre = [rng.uniform(0, s) for s in shape]
        radii = [rng.uniform(0.8, max(1.0, s / 4)) for s in shape]
        m |= blob(shape, centre, radii)
    return m


def brute_force(ref, pred, spacing, surface):
    """Directed distances by an all-pairs distance matrix, surfaces found independently."""
    ref, pred = ref.astype(bool), pred.astype(bool)
    sp = np.asarray(spacing, float)
    if surface == "voxel":  # medpy/MONAI: mask XOR erosion (face connectivity), outside = background
        def pts(m):
            border = m ^ ndimage.binary_erosion(m, ndimage.generate_binary_structure(m.ndim, 1), border_value=0)
            return np.argwhere(border), None
    else:  # DeepMind: 2x2(x2) neighbourhood codes on the zero-padded mask
        kernel = (np.array([[[128, 64], [32, 16]], [[8, 4], [2, 1]]]) if ref.ndim == 3
                  else np.array([[8, 4], [2, 1]]))
        table = (SD._surfel_area_table_3d(tuple(spacing)) if ref.ndim == 3
                 else SD._contour_length_table_2d(tuple(spacing)))
        full = 255 if ref.ndim == 3 else 15

        def pts(m):
            padded = np.pad(m.astype(np.uint8), [(0, 1)] * m.ndim)
            code = ndimage.correlate(padded, kernel, mode="constant", cval=0)
            border = (code != 0) & (code != full)
            return np.argwhere(border), table[code[border]]
    pr, wr = pts(ref)
    pp, wp = pts(pred)
    d = cdist(pr * sp, pp * sp)
    return d.min(axis=1), d.min(axis=0), wr, wp


# --------------------------------------------------------------------------------------------
# hand-computed values

@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (5.0, 0.5, 0.5), (0.7, 1.3, 2.1)])
@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 3])
def test_single_voxels_voxel_convention(spacing, axis, k):
    ref = np.zeros((9, 9, 9), np.uint8)
    ref[4, 4, 4] = 1
    pred = np.roll(ref, k, axis=axis)
    d = k * spacing[axis]
    m = surface_metrics(ref, pred, spacing, surface="voxel", nsd_tolerance_mm=d - 1e-6)
    assert m["hd95_mm"] == pytest.approx(d) and m["hd_mm"] == pytest.approx(d)
    assert m["assd_mm"] == pytest.approx(d)
    assert m[M.nsd_column(d - 1e-6)] == 0.0
    assert surface_metrics(ref, pred, spacing, surface="voxel", nsd_tolerance_mm=d)["nsd_%gmm" % d] == 1.0


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (5.0, 0.5, 0.5)])
@pytest.mark.parametrize("axis", [0, 2])
def test_single_voxels_surfel_convention(spacing, axis):
    """A voxel has 8 corner surfels of equal area. Shifted by one voxel, 4 corners coincide and
    4 are one spacing away; shifted by three, they are 2 and 3 spacings away."""
    s = spacing[axis]
    ref = np.zeros((9, 9, 9), bool)
    ref[4, 4, 4] = True
    sd = surface_distances(ref, np.roll(ref, 1, axis=axis), spacing, "surfel")
    np.testing.assert_allclose(np.sort(sd.ref_to_pred), [0] * 4 + [s] * 4)
    np.testing.assert_allclose(sd.weights_ref, sd.weights_ref[0])
    assert sd.robust_hausdorff(95) == pytest.approx(s)
    assert sd.hausdorff() == pytest.approx(s)
    assert sd.average_symmetric() == pytest.approx(s / 2)
    assert sd.surface_dice(s / 2) == pytest.approx(0.5)
    m = surface_metrics(ref, np.roll(ref, 3, axis=axis), spacing, surface="surfel", nsd_tolerance_mm=2.5 * s)
    assert (m["hd95_mm"], m["hd_mm"]) == (pytest.approx(3 * s), pytest.approx(3 * s))
    assert m["assd_mm"] == pytest.approx(2.5 * s)
    assert m[M.nsd_column(2.5 * s)] == pytest.approx(0.5)


def test_two_slice_slab_shifted_one_slice_anisotropic():
    """5 mm slices, 0.5 mm pixels: a two-slice slab moved up one slice. Every voxel is a boundary
    voxel; half of each surface coincides with the other, half lies one slice (5 mm) away."""
    ref = np.zeros((8, 12, 12), np.uint8)
    ref[2:4, 2:8, 2:8] = 1
    pred = np.roll(ref, 1, axis=0)
    for variant in M.HD95_VARIANTS:
        m = surface_metrics(ref, pred, (5.0, 0.5, 0.5), surface="voxel", nsd_tolerance_mm=2.0,
                            hd95_variant=variant)
        assert m == {"hd95_mm": 5.0, "hd_mm": 5.0, "assd_mm": 2.5, "nsd_2mm": 0.5}
    sd = surface_distances(ref, pred, (5.0, 0.5, 0.5), "voxel")
    assert sorted(np.unique(sd.ref_to_pred)) == [0.0, 5.0] and sd.ref_to_pred.size == 72


def test_square_shifted_two_pixels_2d():
    """5x5 square moved 2 pixels in x: boundary distances 0 (6x), 1 (4x) and 2 (6x) each way."""
    ref = np.zeros((10, 12), np.uint8)
    ref[2:7, 2:7] = 1
    pred = np.roll(ref, 2, axis=1)
    sd = surface_distances(ref, pred, (1.0, 1.0), "voxel")
    for d in (sd.ref_to_pred, sd.pred_to_ref):
        assert np.bincount(d.astype(int)).tolist() == [6, 4, 6]
    m = surface_metrics(ref, pred, (1.0, 1.0), surface="voxel", nsd_tolerance_mm=1.5)
    assert m == {"hd95_mm": 2.0, "hd_mm": 2.0, "assd_mm": 1.0, "nsd_1.5mm": 0.625}
    # same geometry with 0.8 mm pixels: everything scales
    m = surface_metrics(ref, pred, (0.8, 0.8), surface="voxel", nsd_tolerance_mm=1.2)
    assert m["hd95_mm"] == pytest.approx(1.6) and m["assd_mm"] == pytest.approx(0.8)
    assert m["nsd_1.2mm"] == pytest.approx(0.625)


def test_identical_masks_and_concentric_spheres():
    ball = blob((25, 25, 25), (12, 12, 12), (6, 6, 6))
    for surface in M.SURFACES:
        m = surface_metrics(ball, ball, (1, 1, 1), surface=surface)
        assert m == {"hd95_mm": 0.0, "hd_mm": 0.0, "assd_mm": 0.0, "nsd_2mm": 1.0}
        big = blob((25, 25, 25), (12, 12, 12), (9, 9, 9))
        m = surface_metrics(ball, big, (1, 1, 1), surface=surface)
        assert 2.0 <= m["hd95_mm"] <= 4.0 and 2.5 <= m["assd_mm"] <= 3.5 and m["nsd_2mm"] < 0.5


def test_overlap_and_volume_hand_computed():
    ref = np.zeros((4, 5, 5), np.uint8)   # 100 voxels of 2 x 1 x 0.5 = 1 mm³
    pred = np.zeros_like(ref)
    ref.flat[:10] = 1
    pred.flat[4:12] = 1                   # 6 overlap, 2 false positive, 4 false negative
    (row,) = case_metrics(ref, pred, (2.0, 1.0, 0.5))
    assert row["dice"] == pytest.approx(12 / 18) and row["iou"] == pytest.approx(6 / 12)
    assert row["precision"] == pytest.approx(6 / 8) and row["recall"] == pytest.approx(6 / 10)
    assert row["specificity"] == pytest.approx(88 / 90)
    assert row["rvd"] == pytest.approx(-0.2)
    assert row["volume_ref_ml"] == pytest.approx(0.010) and row["volume_pred_ml"] == pytest.approx(0.008)
    assert list(row) == metric_columns()[1:]


# --------------------------------------------------------------------------------------------
# exactness against brute force (all code paths: pruned search, far path, EDT fallback)

@pytest.mark.parametrize("max_cells", [None, 5])  # 5: the memory cap splits every search into tiny chunks
@pytest.mark.parametrize("surface", M.SURFACES)
def test_random_shapes_match_brute_force(surface, max_cells, monkeypatch):
    if max_cells is not None:
        monkeypatch.setattr(SD, "_MAX_CELLS", max_cells)
    rng = np.random.default_rng(7)
    for trial in range(40):
        ndim = 2 if trial % 4 == 0 else 3
        shape = tuple(int(s) for s in rng.integers(6, 30, ndim))
        spacing = tuple(float(s) for s in rng.choice([0.4, 0.5, 1.0, 2.5, 5.0], ndim))
        ref, pred = random_blobs(rng, shape, 2), random_blobs(rng, shape, 3)
        if not ref.any() or not pred.any():
            continue
        sd = surface_distances(ref, pred, spacing, surface)
        d_rp, d_pr, w_r, w_p = brute_force(ref, pred, spacing, surface)
        np.testing.assert_allclose(sd.ref_to_pred, d_rp, rtol=0, atol=1e-9)
        np.testing.assert_allclose(sd.pred_to_ref, d_pr, rtol=0, atol=1e-9)
        if surface == "surfel":
            np.testing.assert_allclose(sd.weights_ref, w_r)
            np.testing.assert_allclose(sd.weights_pred, w_p)


@pytest.mark.parametrize("surface", M.SURFACES)
def test_far_objects_and_edt_fallback_match_brute_force(surface):
    # two full slabs 40 voxels apart: every point is far, so the exact EDT of the box is used
    ref = np.zeros((20, 30, 50), bool)
    pred = np.zeros_like(ref)
    ref[:, :, 1:4] = True
    pred[:, :, 44:47] = True
    # and a small far blob next to a big object: the chunked far path
    ref2 = blob((12, 40, 60), (6, 20, 12), (4, 10, 8))
    pred2 = ref2.copy()
    pred2[5:7, 30:33, 50:53] = True
    for r, p, sp in ((ref, pred, (1.0, 1.0, 1.0)), (ref2, pred2, (5.0, 0.45, 0.45)), (pred2, ref2, (2.0, 0.5, 0.7))):
        sd = surface_distances(r, p, sp, surface)
        d_rp, d_pr, _, _ = brute_force(r, p, sp, surface)
        np.testing.assert_allclose(sd.ref_to_pred, d_rp, rtol=0, atol=1e-9)
        np.testing.assert_allclose(sd.pred_to_ref, d_pr, rtol=0, atol=1e-9)


def test_weighted_percentile_matches_full_sort():
    rng = np.random.default_rng(3)
    for n in (1, 5, 600, 5000):
        d = np.round(rng.gamma(1.0, 2.0, n), 1)  # many ties
        w = rng.choice([0.1, 0.25, 0.3], n)
        for q in (0, 50, 95, 99.9, 100):
            order = np.lexsort((w, d))
            cum = np.cumsum(w[order]) / np.sum(w)
            expected = d[order][min(int(np.searchsorted(cum, q / 100)), n - 1)]
            assert SD._weighted_percentile(d, w, q) == expected


def test_nonzero_bbox_any_dtype_and_layout():
    rng = np.random.default_rng(1)
    for _ in range(400):
        ndim = int(rng.integers(2, 4))
        shape = tuple(int(s) for s in rng.integers(1, 20, ndim))
        dtype = rng.choice([np.uint8, np.int16, np.float32, np.float64, bool])
        a = np.zeros(shape, dtype)
        for _ in range(int(rng.integers(0, 4))):
            a[tuple(int(rng.integers(0, s)) for s in shape)] = 1
        if rng.random() < 0.3:
            a = a.transpose()
        nz = np.nonzero(a)
        expected = None if nz[0].size == 0 else tuple(slice(int(i.min()), int(i.max()) + 1) for i in nz)
        assert nonzero_bbox(a) == expected


# --------------------------------------------------------------------------------------------
# empty masks

@pytest.mark.parametrize("surface", M.SURFACES)
def test_empty_policy(surface):
    shape, spacing = (10, 20, 20), (5.0, 0.5, 0.5)
    empty = np.zeros(shape, np.uint8)
    lesion = empty.copy()
    lesion[3:5, 5:9, 5:9] = 1
    diag = image_diagonal_mm(shape, spacing)
    assert diag == pytest.approx(math.sqrt(50 ** 2 + 10 ** 2 + 10 ** 2))

    (both,) = case_metrics(empty, empty, spacing, surface=surface)
    assert both["dice"] == 1.0 and both["nsd_2mm"] == 1.0 and both["hd95_mm"] == 0.0 and both["rvd"] == 0.0
    assert both["empty_ref"] and both["empty_pred"] and both["volume_ref_ml"] == 0.0

    (missed,) = case_metrics(lesion, empty, spacing, surface=surface)
    assert missed["dice"] == 0.0 and missed["recall"] == 0.0 and missed["precision"] == 0.0
    assert missed["hd95_mm"] == missed["hd_mm"] == missed["assd_mm"] == pytest.approx(diag)
    assert missed["nsd_2mm"] == 0.0 and missed["rvd"] == -1.0
    assert not missed["empty_ref"] and missed["empty_pred"]
    assert (missed["n_lesions_ref"], missed["lesions_missed"]) == (1, 1)

    (false_pos,) = case_metrics(empty, lesion, spacing, surface=surface)
    assert false_pos["dice"] == 0.0 and false_pos["hd95_mm"] == pytest.approx(diag)
    assert math.isnan(false_pos["rvd"]) and false_pos["lesions_false_positive"] == 1
    assert false_pos["empty_ref"] and not false_pos["empty_pred"]

    (nan_policy,) = case_metrics(lesion, empty, spacing, surface=surface, empty_penalty="nan")
    assert math.isnan(nan_policy["hd95_mm"]) and math.isnan(nan_policy["assd_mm"])
    assert nan_policy["dice"] == 0.0  # overlap scores stay 0, never NaN

    m = surface_metrics(lesion, empty, spacing, surface=surface)
    assert m["hd95_mm"] > 0 and m["nsd_2mm"] == 0.0  # an empty prediction never scores 0 mm
    sd = surface_distances(lesion, empty, spacing, surface)
    assert sd.empty_pred and not sd.empty_ref and np.isinf(sd.ref_to_pred).all()


def test_options_are_checked():
    a = np.ones((3, 3, 3))
    with pytest.raises(ValueError, match="surface"):
        surface_metrics(a, a, (1, 1, 1), surface="mesh")
    with pytest.raises(ValueError, match="variant"):
        surface_metrics(a, a, (1, 1, 1), hd95_variant="mean")
    with pytest.raises(ValueError, match="spacing"):
        surface_metrics(a, a, (1, 1))
    with pytest.raises(ValueError, match="shape"):
        case_metrics(a, np.ones((3, 3, 4)), (1, 1, 1))


# --------------------------------------------------------------------------------------------
# labels and lesions

def test_multilabel_and_regions():
    ref = np.zeros((6, 16, 16), np.uint8)
    ref[1:3, 2:6, 2:6] = 1
    ref[3:5, 8:12, 8:12] = 2
    pred = ref.copy()
    pred[3:5, 8:12, 8:10] = 1  # half of label 2 predicted as 1
    rows = {r["label"]: r for r in case_metrics(ref, pred, (2.0, 1.0, 1.0), labels=[1, 2, (1, 2), 3])}
    assert set(rows) == {1, 2, "1+2", 3}
    assert rows[1]["recall"] == 1.0 and rows[1]["precision"] == pytest.approx(32 / 48)
    assert rows[2]["dice"] == pytest.approx(2 * 16 / (32 + 16))
    assert rows["1+2"]["dice"] == 1.0 and rows["1+2"]["hd95_mm"] == 0.0
    assert rows[3] == {**M.both_empty_row(3), "label": 3}
    assert [r["label"] for r in case_metrics(ref, pred, (2.0, 1.0, 1.0), labels=None)] == [1, 2]
    assert M.parse_label("1+2") == (1, 2) and M.parse_label("3") == 3 and M.label_name((1, 2)) == "1+2"
    assert M.present_labels(ref, pred) == [1, 2]


def test_lesion_counts_26_connectivity():
    ref = np.zeros((10, 20, 20), np.uint8)
    ref[1:3, 1:4, 1:4] = 1          # lesion A
    ref[3, 4, 4] = 1                # touches A only by a corner: same lesion (26-connectivity)
    ref[6:8, 10:14, 10:14] = 1      # lesion B
    ref[2, 15:18, 2:5] = 1          # lesion C
    pred = np.zeros_like(ref)
    pred[3, 4, 4] = 1               # hits A through its corner voxel
    pred[7, 12, 12] = 1             # hits B
    pred[8, 1:3, 15:18] = 1         # false positive
    pred[0, 18, 18] = 1             # another false positive
    counts = lesion_detection(ref, pred)
    assert counts == {"n_lesions_ref": 3, "lesions_detected": 2, "lesions_missed": 1, "lesions_false_positive": 2}
    (row,) = case_metrics(ref, pred, (5, 0.5, 0.5))
    assert {k: row[k] for k in counts} == counts
    assert lesion_detection(ref, pred, min_overlap_voxels=2)["lesions_detected"] == 0


# --------------------------------------------------------------------------------------------
# images

def test_sitk_spacing_order(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    arr = np.zeros((4, 6, 8), np.uint8)  # z, y, x
    arr[1:3, 2:4, 3:6] = 1
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.45, 0.5, 5.0))     # x, y, z
    assert M.spacing_from_sitk(img) == (5.0, 0.5, 0.45)
    sitk.WriteImage(img, str(tmp_path / "m.nii.gz"))
    back, spacing = M.read_mask(tmp_path / "m.nii.gz")
    assert spacing == pytest.approx((5.0, 0.5, 0.45)) and np.array_equal(back, arr)
    (row,) = case_metrics(back, back, spacing)
    assert row["volume_ref_ml"] == pytest.approx(12 * 5.0 * 0.5 * 0.45 / 1000)


# --------------------------------------------------------------------------------------------
# agreement with the reference libraries (benchmark-only dependencies)

def _pairs(rng, n=12):
    out = []
    for i in range(n):
        shape = (int(rng.integers(8, 20)), int(rng.integers(20, 48)), int(rng.integers(20, 48)))
        spacing = (float(rng.choice([2.5, 5.0])), float(rng.choice([0.4, 0.45, 0.5])), 0.45)
        ref = random_blobs(rng, shape, 2)
        pred = np.roll(ref, int(rng.integers(-2, 3)), axis=2)
        if i % 2:
            pred = ndimage.binary_dilation(pred)
        if i % 3 == 0:
            pred[0, :3, :3] = True  # a far false positive
        if ref.any() and pred.any():
            out.append((ref, pred, spacing))
    return out


def test_agrees_with_deepmind_surface_distance():
    sd_lib = pytest.importorskip("surface_distance")
    if not hasattr(np, "Inf"):  # surface-distance 0.1 still uses np.Inf (removed in numpy 2)
        np.Inf = np.inf
    for ref, pred, sp in _pairs(np.random.default_rng(11)):
        ref_d = sd_lib.compute_surface_distances(ref, pred, sp)
        ours = surface_distances(ref, pred, sp, "surfel")
        np.testing.assert_allclose(np.sort(ours.ref_to_pred), ref_d["distances_gt_to_pred"], atol=1e-9)
        np.testing.assert_allclose(np.sort(ours.pred_to_ref), ref_d["distances_pred_to_gt"], atol=1e-9)
        np.testing.assert_allclose(ours.weights_ref.sum(), ref_d["surfel_areas_gt"].sum())
        assert ours.robust_hausdorff(95) == pytest.approx(sd_lib.compute_robust_hausdorff(ref_d, 95), abs=1e-3)
        assert ours.directed_percentiles(95) == pytest.approx(
            (sd_lib.compute_robust_hausdorff({**ref_d, "distances_pred_to_gt": np.array([0.0]),
                                              "surfel_areas_pred": np.array([1.0])}, 95),
             sd_lib.compute_robust_hausdorff({**ref_d, "distances_gt_to_pred": np.array([0.0]),
                                              "surfel_areas_gt": np.array([1.0])}, 95)), abs=1e-3)
        assert ours.directed_averages() == pytest.approx(sd_lib.compute_average_surface_distance(ref_d), abs=1e-3)
        for tol in (0.5, 1.0, 2.0):
            assert ours.surface_dice(tol) == pytest.approx(
                sd_lib.compute_surface_dice_at_tolerance(ref_d, tol), abs=1e-9)


def test_agrees_with_monai():
    pytest.importorskip("monai")
    torch = pytest.importorskip("torch")
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

    for ref, pred, sp in _pairs(np.random.default_rng(12), n=8):
        y, yp = torch.from_numpy(ref)[None, None], torch.from_numpy(pred)[None, None]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hd95 = float(compute_hausdorff_distance(yp, y, include_background=True, percentile=95, spacing=sp))
            hd = float(compute_hausdorff_distance(yp, y, include_background=True, spacing=sp))
            assd = float(compute_average_surface_distance(yp, y, include_background=True, symmetric=True, spacing=sp))
            nsd = float(compute_surface_dice(yp, y, [1.3], include_background=True, spacing=sp))
        m = surface_metrics(ref, pred, sp, surface="voxel", nsd_tolerance_mm=1.3)
        assert m["hd95_mm"] == pytest.approx(hd95, abs=1e-3)
        assert m["hd_mm"] == pytest.approx(hd, abs=1e-3)
        assert m["assd_mm"] == pytest.approx(assd, abs=1e-3)
        assert m["nsd_1.3mm"] == pytest.approx(nsd, abs=1e-6)


def test_agrees_with_medpy():
    binary = pytest.importorskip("medpy.metric.binary")
    for ref, pred, sp in _pairs(np.random.default_rng(13), n=6):
        m = surface_metrics(ref, pred, sp, surface="voxel", hd95_variant="pooled")
        assert m["hd95_mm"] == pytest.approx(binary.hd95(pred, ref, sp), abs=1e-3)
        assert m["assd_mm"] == pytest.approx(binary.assd(pred, ref, sp), abs=1e-3)
        assert m["hd_mm"] == pytest.approx(binary.hd(pred, ref, sp), abs=1e-3)


@pytest.mark.shared_data
def test_real_masks_agree_with_deepmind(physionet_dir):
    sd_lib = pytest.importorskip("surface_distance")
    if not hasattr(np, "Inf"):
        np.Inf = np.inf
    done = 0
    for path in sorted((physionet_dir / "masks").glob("*.nii.gz")):
        ref, sp = M.read_mask(path)
        ref = ref != 0
        if not ref.any() or ref.sum() > 20000:  # small cases keep the test quick
            continue
        pred = np.roll(ndimage.binary_erosion(ref, np.ones((1, 3, 3), bool)) | ref[:, ::-1, :], 2, axis=2)
        ref_d = sd_lib.compute_surface_distances(ref, pred, sp)
        m = surface_metrics(ref, pred, sp, surface="surfel", nsd_tolerance_mm=2.0)
        assert m["hd95_mm"] == pytest.approx(sd_lib.compute_robust_hausdorff(ref_d, 95), abs=1e-3)
        a1, a2 = sd_lib.compute_average_surface_distance(ref_d)
        w1, w2 = ref_d["surfel_areas_gt"].sum(), ref_d["surfel_areas_pred"].sum()
        assert m["assd_mm"] == pytest.approx((a1 * w1 + a2 * w2) / (w1 + w2), abs=1e-3)
        assert m["nsd_2mm"] == pytest.approx(sd_lib.compute_surface_dice_at_tolerance(ref_d, 2.0), abs=1e-9)
        done += 1
        if done == 4:
            break
    assert done


def test_2d_case_metrics_and_8_connectivity():
    ref = np.zeros((20, 20), np.uint8)
    ref[2:6, 2:6] = 1
    ref[6, 6] = 1                   # diagonal neighbour: same lesion in 2D (8-connectivity)
    pred = np.roll(ref, 1, axis=1)
    (row,) = case_metrics(ref, pred, (0.5, 0.5))
    assert row["n_lesions_ref"] == 1 and row["lesions_detected"] == 1
    assert row["volume_ref_ml"] == pytest.approx(17 * 0.25 / 1000)
    assert row["hd_mm"] == pytest.approx(0.5)
    m_float = surface_metrics(ref.astype(np.float32), pred.astype(np.float64), (0.5, 0.5))
    m_int = surface_metrics(ref, pred, (0.5, 0.5))
    assert m_float == m_int


def test_public_names_survive_the_split():
    """The distance engine moved to ``surface_distance``; ``metrics`` still exports every public name."""
    assert all(hasattr(M, name) for name in M.__all__)
    assert M.SurfaceDistances is SD.SurfaceDistances and M.nonzero_bbox is SD.nonzero_bbox
    assert M.surface_distances is SD.surface_distances
