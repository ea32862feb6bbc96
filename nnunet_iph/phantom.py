"""Synthetic multi-site head-CT phantom with intraparenchymal hemorrhages: the embedded default data.

Why: the demo and the tests need CT-like volumes on any machine, with known ground truth and
the nuisance factors of multi-site studies (noise, HU offset, slice thickness, in-plane
resolution, field of view). Every subject is drawn from its own seeded generator
(``seed``, subject index), so the same seed gives identical arrays whatever the cohort size.

Anatomy in HU: air -1000, skull 700-1500, parenchyma 25-40 (smooth grey/white variation),
ventricles (CSF) 0-15, hemorrhages 50-90 with irregular lobulated shapes, 0-3 per subject,
volumes log-uniform in [``min_ml``, ``max_ml``]. Masks label hemorrhage as 1.
Output: ``images/<id>.nii.gz``, ``masks/<id>.nii.gz`` and ``manifest.csv``
(``subject_id,image,mask,site,age,sex`` plus ``n_hemorrhages,hemorrhage_ml``), the layout the
multi-site converter reads.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from tqdm import tqdm

from nnunet_iph.imageio import atomic_path, write_image


@dataclass(frozen=True)
class PhantomSize:
    """In-plane matrix and spacing of a preset; sites scale the spacing around it."""

    matrix: int
    inplane_mm: float
    slice_mm: float


SIZES = {
    "tiny": PhantomSize(matrix=64, inplane_mm=3.4, slice_mm=6.0),     # tests, --quick demo
    "small": PhantomSize(matrix=128, inplane_mm=1.7, slice_mm=5.0),   # default demo
    "clinical": PhantomSize(matrix=512, inplane_mm=0.45, slice_mm=5.0),
}


@dataclass(frozen=True)
class SiteProfile:
    """Scanner differences of one site, relative to the size preset."""

    name: str
    inplane_scale: float  # multiplies the preset's in-plane spacing
    slice_scale: float  # multiplies the preset's slice thickness
    fov_scale: float  # multiplies the matrix (field of view at fixed spacing)
    noise_hu: float
    hu_offset: float


@dataclass(frozen=True)
class PhantomConfig:
    n_subjects: int = 12
    n_sites: int = 3
    size: str = "small"
    seed: int = 0
    min_ml: float = 0.5
    max_ml: float = 80.0
    p_no_hemorrhage: float = 0.2
    sites: tuple[SiteProfile, ...] = field(default=())

    def site_profiles(self) -> tuple[SiteProfile, ...]:
        return self.sites or default_sites(self.n_sites, self.seed)


def default_sites(n_sites: int, seed: int = 0) -> tuple[SiteProfile, ...]:
    """Deterministic scanner profiles: site 1 is the preset, others vary noise/offset/geometry."""
    if n_sites < 1:
        raise ValueError(f"n_sites must be >= 1, got {n_sites}")
    rng = np.random.default_rng([seed, 10_000])
    sites = [SiteProfile("site01", 1.0, 1.0, 1.0, 4.0, 0.0)]
    for i in range(2, n_sites + 1):
        sites.append(SiteProfile(
            name=f"site{i:02d}", inplane_scale=float(rng.uniform(0.9, 1.15)),
            slice_scale=float(rng.choice([0.8, 1.0, 1.0, 1.2])), fov_scale=float(rng.uniform(0.95, 1.1)),
            noise_hu=float(rng.uniform(2.5, 8.0)), hu_offset=float(rng.uniform(-4.0, 4.0))))
    return tuple(sites)


@dataclass
class Subject:
    subject_id: str
    site: str
    age: int
    sex: str
    image: sitk.Image
    mask: sitk.Image
    hemorrhage_ml: float
    n_hemorrhages: int


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: tuple[float, ...]) -> np.ndarray:
    """Smooth noise scaled to [0, 1]: tissue texture without high-frequency artefacts."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_vox)
    return (f - f.min()) / max(float(np.ptp(f)), 1e-9)


def _lesion(rng: np.random.Generator, coords: np.ndarray, center: np.ndarray, radius: float) -> np.ndarray:
    """Lobulated blob: a sphere whose radius varies smoothly with direction."""
    d = coords - center[:, None, None, None]
    dist = np.sqrt((d ** 2).sum(0))
    u = d / np.maximum(dist, 1e-6)
    modulation = np.ones_like(dist)
    for _ in range(4):
        k = rng.normal(size=3)
        k *= rng.uniform(1.5, 3.0) / np.linalg.norm(k)
        modulation += 0.12 * np.cos(np.tensordot(k, u, axes=1) + rng.uniform(0, 2 * np.pi))
    return dist < radius * modulation


def generate_subject(config: PhantomConfig, index: int) -> Subject:
    """One subject, reproducible from ``(config.seed, index)`` alone."""
    size = SIZES[config.size]
    sites = config.site_profiles()
    rng = np.random.default_rng([config.seed, index])
    site = sites[index % len(sites)]
    inplane = size.inplane_mm * site.inplane_scale
    slice_mm = size.slice_mm * site.slice_scale
    nxy = int(round(size.matrix * site.fov_scale))
    head = np.array([66.0, 86.0, 64.0]) * rng.uniform(0.92, 1.06)  # semi-axes x, y, z in mm
    nz = int(np.ceil(2 * (head[2] + 12) / slice_mm))
    spacing_zyx = np.array([slice_mm, inplane, inplane])
    shape = (nz, nxy, nxy)
    # physical offsets (mm) from the head centre, array order z, y, x -> coords[0]=x, [1]=y, [2]=z
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing_zyx)]
    zz, yy, xx = np.meshgrid(*axes, indexing="ij")
    coords = np.stack([xx, yy, zz])

    def ellipsoid(semi: np.ndarray, offset=(0.0, 0.0, 0.0)) -> np.ndarray:
        return sum(((c - o) / s) ** 2 for c, s, o in zip(coords, semi, offset))

    skull_thickness = rng.uniform(5.0, 8.0)
    outer = ellipsoid(head) <= 1
    brain = ellipsoid(head - skull_thickness) <= 1
    ventricles = np.zeros(shape, bool)
    for side in (-1, 1):
        ventricles |= ellipsoid(np.array([6.0, 22.0, 11.0]) * rng.uniform(0.8, 1.3),
                                (side * rng.uniform(7, 10), rng.uniform(-5, 5), rng.uniform(0, 10))) <= 1
    ventricles &= brain
    parenchyma = brain & ~ventricles

    sigma_texture = tuple(8.0 / s for s in spacing_zyx)
    image = np.full(shape, -1000.0)
    image[outer] = (700 + 800 * _smooth_field(rng, shape, sigma_texture))[outer]
    image[parenchyma] = (25 + 15 * _smooth_field(rng, shape, sigma_texture))[parenchyma]
    image[ventricles] = (3 + 10 * _smooth_field(rng, shape, sigma_texture))[ventricles]

    mask = np.zeros(shape, np.uint8)
    n_lesions = 0 if rng.random() < config.p_no_hemorrhage else int(rng.choice([1, 1, 1, 2, 2, 3]))
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    eroded = ndimage.binary_erosion(parenchyma, iterations=1)
    for _ in range(n_lesions):
        target_ml = float(np.exp(rng.uniform(np.log(config.min_ml), np.log(config.max_ml))))
        radius = (3 * target_ml * 1000 / (4 * np.pi)) ** (1 / 3)
        # centre deep enough that most of the blob lies in parenchyma (rejection sampling)
        inner = head - skull_thickness - 0.6 * radius
        center = rng.uniform(-1, 1, 3) * inner
        while np.sum((center / inner) ** 2) > 1:
            center = rng.uniform(-1, 1, 3) * inner
        state = rng.bit_generator.state
        blob = _lesion(rng, coords, center, radius) & eroded
        if blob.any():  # rescale once so the clipped blob is close to the drawn volume
            rng.bit_generator.state = state
            radius *= (target_ml / (blob.sum() * voxel_ml)) ** (1 / 3)
            blob = _lesion(rng, coords, center, radius) & eroded
        lesion_hu = rng.uniform(58, 82)
        image[blob] = lesion_hu + 8 * (_smooth_field(rng, shape, sigma_texture)[blob] - 0.5)
        mask[blob] = 1

    image = ndimage.gaussian_filter(image, (0.0, 0.6, 0.6))  # scanner PSF: soft in-plane edges
    image += site.hu_offset + rng.normal(0.0, site.noise_hu, shape)
    image = np.clip(np.round(image), -1024, 3071).astype(np.int16)

    origin = tuple(float(-(n - 1) / 2 * s) for n, s in zip(shape[::-1], spacing_zyx[::-1]))
    images = []
    for arr in (image, mask):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
        img.SetOrigin(origin)
        images.append(img)
    return Subject(subject_id=f"sub{index + 1:04d}", site=site.name, age=int(rng.integers(25, 91)),
                   sex=str(rng.choice(["F", "M"])), image=images[0], mask=images[1],
                   hemorrhage_ml=round(float(mask.sum()) * voxel_ml, 4),
                   n_hemorrhages=int(ndimage.label(mask, np.ones((3, 3, 3)))[1]))


MANIFEST_COLUMNS = ["subject_id", "image", "mask", "site", "age", "sex", "n_hemorrhages", "hemorrhage_ml"]


def generate_cohort(out_dir: str | Path, config: PhantomConfig = PhantomConfig(),
                    progress: bool = True) -> Path:
    """Write the cohort and return the manifest path. Re-running with the same config rewrites
    identical files; the manifest is written last, so its presence marks a complete cohort."""
    out_dir = Path(out_dir)
    if config.size not in SIZES:
        raise ValueError(f"unknown phantom size {config.size!r}; choose one of {sorted(SIZES)}")
    rows = []
    for index in tqdm(range(config.n_subjects), desc="phantom", disable=not progress, unit="subject"):
        s = generate_subject(config, index)
        write_image(s.image, out_dir / "images" / f"{s.subject_id}.nii.gz")
        write_image(s.mask, out_dir / "masks" / f"{s.subject_id}.nii.gz")
        rows.append([s.subject_id, f"images/{s.subject_id}.nii.gz", f"masks/{s.subject_id}.nii.gz",
                     s.site, s.age, s.sex, s.n_hemorrhages, s.hemorrhage_ml])
    manifest = out_dir / "manifest.csv"
    with atomic_path(manifest) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(MANIFEST_COLUMNS)
        writer.writerows(rows)
    return manifest
