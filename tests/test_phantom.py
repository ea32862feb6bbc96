"""Phantom: determinism, geometry, HU ranges, hemorrhage volumes (pure data, no torch)."""

import csv

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from nnunet_iph.phantom import SIZES, PhantomConfig, default_sites, generate_cohort, generate_subject

CFG = PhantomConfig(n_subjects=12, n_sites=3, size="tiny", seed=7)


def arrays(s):
    return sitk.GetArrayFromImage(s.image), sitk.GetArrayFromImage(s.mask)


@pytest.fixture(scope="module")
def subjects():
    return [generate_subject(CFG, i) for i in range(CFG.n_subjects)]


def test_same_seed_same_arrays_independent_of_cohort_size(subjects):
    again = generate_subject(PhantomConfig(n_subjects=3, n_sites=3, size="tiny", seed=7), 2)
    for a, b in zip(arrays(subjects[2]), arrays(again)):
        np.testing.assert_array_equal(a, b)
    other = generate_subject(PhantomConfig(n_subjects=12, n_sites=3, size="tiny", seed=8), 2)
    assert not np.array_equal(arrays(subjects[2])[0], arrays(other)[0])


def test_geometry_is_anisotropic_and_sites_differ(subjects):
    spacings = {s.site: s.image.GetSpacing() for s in subjects}
    assert len(spacings) == 3 and len(set(spacings.values())) == 3
    for s in subjects:
        sx, sy, sz = s.image.GetSpacing()
        assert sx == sy and sz >= 1.2 * sx  # thick slices, like clinical CT
        assert s.mask.GetSize() == s.image.GetSize() and s.mask.GetSpacing() == s.image.GetSpacing()
        assert s.mask.GetOrigin() == s.image.GetOrigin()
    clinical = SIZES["clinical"]
    assert clinical.inplane_mm == 0.45 and clinical.slice_mm == 5.0 and clinical.matrix == 512


def test_hu_ranges_of_tissues(subjects):
    for s in subjects:
        img, mask = arrays(s)
        assert img.dtype == np.int16 and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 1}
        skull = img[img > 600]  # partial-volume edges of a thin skull pull the median down
        assert skull.size > 0 and 700 <= np.percentile(skull, 90) and skull.max() <= 1550
        if mask.any():
            core = ndimage.binary_erosion(mask, iterations=1) if ndimage.binary_erosion(mask).any() else mask
            assert 48 <= np.median(img[core.astype(bool)]) <= 92
        brain = (img > 15) & (img < 45) & ~mask.astype(bool)
        assert brain.sum() > 0.1 * img.size * 0.2


def test_hemorrhage_volumes_span_small_to_large():
    cfg = PhantomConfig(n_subjects=40, n_sites=2, size="tiny", seed=3)
    subs = [generate_subject(cfg, i) for i in range(cfg.n_subjects)]
    vols = np.array([s.hemorrhage_ml for s in subs])
    counts = np.array([s.n_hemorrhages for s in subs])
    assert (vols == 0).sum() >= 2 and (counts >= 2).sum() >= 2
    assert vols[vols > 0].min() < 2.0 and vols.max() > 40
    for s in subs:  # recorded volume is the mask volume
        _, m = arrays(s)
        assert s.hemorrhage_ml == pytest.approx(m.sum() * np.prod(s.mask.GetSpacing()) / 1000, abs=1e-3)


def test_cohort_writes_manifest_and_files(tmp_path):
    cfg = PhantomConfig(n_subjects=4, n_sites=2, size="tiny", seed=1)
    manifest = generate_cohort(tmp_path, cfg, progress=False)
    rows = list(csv.DictReader(open(manifest, encoding="utf-8")))
    assert list(rows[0])[:6] == ["subject_id", "image", "mask", "site", "age", "sex"]
    assert [r["site"] for r in rows] == ["site01", "site02", "site01", "site02"]
    for r in rows:
        assert (tmp_path / r["image"]).is_file() and (tmp_path / r["mask"]).is_file()
        assert r["sex"] in {"F", "M"} and 18 <= int(r["age"]) <= 95
    assert not list(tmp_path.rglob(".*.tmp*"))  # no temporary leftovers


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_sites"):
        default_sites(0)
    with pytest.raises(ValueError, match="unknown phantom size"):
        generate_cohort("unused", PhantomConfig(size="huge"))
