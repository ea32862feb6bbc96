"""Figures are written as valid PNGs; the overlay colours and slice choice are right."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from nnunet_iph.analysis import figures as F

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    assert path.is_file() and path.read_bytes()[:8] == PNG_MAGIC
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    return img


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for m in ("A", "B"):
        for i in range(12):
            ref = float(rng.uniform(0.5, 40))
            rows.append({"system": m, "case": f"c{i}", "site": "XY"[i % 2], "age": 30 + 3 * i,
                         "dice": float(rng.uniform(0.3, 0.95)), "hd95_mm": np.inf if i == 0 else float(rng.uniform(1, 9)),
                         "reference_volume_ml": ref, "volume_pred_ml": ref * float(rng.uniform(0.7, 1.3))})
    return pd.DataFrame(rows)


def test_table_figures_are_pngs(tmp_path, table):
    assert_png(F.box_by_site(table, "dice", tmp_path / "box.png"))
    assert_png(F.box_by_site(table, "hd95_mm", tmp_path / "box_hd.png"))  # with a non-finite value
    assert_png(F.box_by_site(table.drop(columns="site"), "dice", tmp_path / "box_nosite.png"))
    assert_png(F.metric_vs_age(table, "dice", tmp_path / "age.png"))
    assert_png(F.bland_altman(table, tmp_path / "ba.png"))
    assert_png(F.volume_scatter(table, tmp_path / "vol.png"))
    assert not list(tmp_path.glob(".*"))  # atomic writes leave no temporaries


def test_metric_vs_age_without_age_writes_nothing(tmp_path, table):
    assert F.metric_vs_age(table.assign(age=np.nan), "dice", tmp_path / "age.png") is None
    assert not (tmp_path / "age.png").exists()


def test_choose_slice():
    ref = np.zeros((5, 8, 8), np.uint8)
    pred = np.zeros_like(ref)
    assert F.choose_slice(ref, pred) == 2  # both empty: middle
    pred[1, :2, :2] = 1
    assert F.choose_slice(ref, pred) == 1  # reference empty: largest prediction
    ref[3, :3, :3] = 1
    ref[4, :2, :2] = 1
    assert F.choose_slice(ref, pred) == 3  # largest reference area


def test_overlay_colours():
    ct = np.full((1, 4, 4), 50.0)
    ref = np.zeros((1, 4, 4), np.uint8)
    pred = np.zeros_like(ref)
    ref[0, 0, 0] = ref[0, 0, 1] = 1  # (0,0) TP, (0,1) FN
    pred[0, 0, 0] = pred[0, 1, 0] = 1  # (1,0) FP
    rgb = F.overlay_rgb(ct[0], ref[0], pred[0], window=(0, 100), alpha=1.0)
    assert tuple(rgb[0, 0]) == F.TP_COLOR and tuple(rgb[0, 1]) == F.FN_COLOR and tuple(rgb[1, 0]) == F.FP_COLOR
    assert tuple(rgb[3, 3]) == (0.5, 0.5, 0.5)  # 50 HU in a 0-100 window
    assert F.overlay_rgb(np.array([[-50.0, 150.0]]), np.zeros((1, 2)), np.zeros((1, 2)))[0, :, 0].tolist() == [0, 1]


def test_overlay_png(tmp_path):
    rng = np.random.default_rng(1)
    ct = rng.normal(40, 20, (6, 40, 48))
    ref = np.zeros(ct.shape, np.uint8)
    pred = np.zeros(ct.shape, np.uint8)
    ref[2:4, 10:20, 10:20] = 1
    pred[2:4, 12:22, 12:24] = 1
    img = assert_png(F.overlay_png(ct, ref, pred, tmp_path / "ov.png", title="case 1", spacing=(5, 0.5, 0.5)))
    flat = img[..., :3].reshape(-1, 3)
    greenish = (flat[:, 1] > 0.5) & (flat[:, 0] < 0.4) & (flat[:, 2] < 0.4)
    assert greenish.any()
    assert_png(F.overlay_png(ct[3], ref[3], pred[3], tmp_path / "ov2d.png"))  # a single 2D slice works too
    with pytest.raises(ValueError, match="shapes"):
        F.overlay_png(ct, ref[:3], pred, tmp_path / "bad.png")
