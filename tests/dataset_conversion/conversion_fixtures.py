"""Tiny synthetic inputs for the converter tests, written with SimpleITK inside each test.

Imported by the tests of this folder (pytest puts the folder on sys.path). Nothing here is
committed as an image file.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SHAPE = (6, 12, 10)  # numpy (z, y, x) -> SimpleITK size (10, 12, 6)
SPACING = (0.45, 0.45, 5.0)
ORIGIN = (-10.0, 20.0, -30.0)


def make_pair(seed: int = 0, lesion: int = 1, shape=SHAPE, spacing=SPACING, origin=ORIGIN,
              direction=None, dtype=np.int16) -> tuple[sitk.Image, sitk.Image]:
    """A CT-like int16 volume and a 0/1 uint8 mask on the same grid (``lesion`` voxels lit in-plane)."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(-20, 100, shape).astype(dtype)
    m = np.zeros(shape, np.uint8)
    if lesion:
        m[2:4, 3:3 + lesion, 4:7] = 1
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    mask = sitk.GetImageFromArray(m)
    mask.CopyInformation(img)
    return img, mask


def write(image: sitk.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=str(path).endswith(".gz"))
    return path


def write_manifest(path: Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in columns})
    return path


def make_cohort(root: Path, n: int = 6, sites: int = 2, ext: str = ".nii.gz", **row_extra) -> Path:
    """n subjects over ``sites`` sites; lesion sizes vary; returns the manifest path."""
    rows = []
    for i in range(n):
        img, mask = make_pair(seed=i, lesion=i % 4)
        write(img, root / "images" / f"sub{i:02d}{ext}")
        write(mask, root / "masks" / f"sub{i:02d}{ext}")
        rows.append({"subject_id": f"sub{i:02d}", "image": f"images/sub{i:02d}{ext}",
                     "mask": f"masks/sub{i:02d}{ext}", "site": f"site{i % sites}", "age": str(40 + i),
                     "sex": "MF"[i % 2], "gcs": str(15 - i % 3), **row_extra})
    return write_manifest(root / "manifest.csv", rows)


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def report(ds: Path) -> dict[str, dict]:
    return {r["subject_id"]: r for r in read_rows(ds / "conversion_report.csv")}


def dataset_files(ds: Path) -> set[str]:
    """Every file under the output folders (relative), including hidden temporaries."""
    out = set()
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        d = ds / sub
        if d.is_dir():
            out |= {f"{sub}/{p.name}" for p in d.iterdir()}
    return out


def assert_no_partial_output(ds: Path) -> None:
    """No temporaries, no staging leftovers, and every training image has its label and vice versa."""
    files = dataset_files(ds)
    assert not [f for f in files if Path(f).name.startswith(".")], files
    staging = ds / ".nnunet_iph" / "staging"
    assert not staging.exists() or not any(staging.iterdir())
    imgs = {Path(f).name[: -len("_0000.nii.gz")] for f in files if f.startswith("imagesTr/")}
    labs = {Path(f).name[: -len(".nii.gz")] for f in files if f.startswith("labelsTr/")}
    assert imgs == labs, (imgs, labs)


def assert_same_image(a: sitk.Image | str | os.PathLike, b: sitk.Image | str | os.PathLike) -> None:
    """Voxel-identical, same pixel type and same geometry."""
    a = a if isinstance(a, sitk.Image) else sitk.ReadImage(str(a))
    b = b if isinstance(b, sitk.Image) else sitk.ReadImage(str(b))
    assert a.GetPixelID() == b.GetPixelID(), (a.GetPixelIDTypeAsString(), b.GetPixelIDTypeAsString())
    assert a.GetSize() == b.GetSize()
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b))
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), rtol=0, atol=1e-6)


def write_dicom_series(arr: np.ndarray, folder: Path, positions, spacing=(0.5, 0.6), iop=(1, 0, 0, 0, 1, 0),
                       uid: str = "1.2.826.0.1.3680043.2.1125.7", patient: str = "P1",
                       tilt_deg: float = 0.0) -> Path:
    """One DICOM file per slice, written with SimpleITK's ImageFileWriter and explicit geometry tags.

    ``arr`` is (z, y, x) int16; ``positions`` the ImagePositionPatient of each slice; ``spacing`` (x, y).
    """
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(arr.shape[0]):
        sl = sitk.GetImageFromArray(arr[k])
        sl.SetSpacing(spacing)
        tags = {
            "0008|0060": "CT", "0008|0016": "1.2.840.10008.5.1.4.1.1.2", "0008|0018": f"{uid}.{k + 1}",
            "0020|000d": f"{uid}.9", "0020|000e": f"{uid}.1", "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.4f}" for v in positions[k]),
            "0020|0037": "\\".join(str(v) for v in iop),
            "0028|0030": f"{spacing[1]}\\{spacing[0]}", "0018|0050": "5", "0010|0020": patient,
            "0018|1120": f"{tilt_deg:g}", "0028|1052": "0", "0028|1053": "1",
        }
        for t, v in tags.items():
            sl.SetMetaData(t, v)
        writer.SetFileName(str(folder / f"IM{k:04d}.dcm"))
        writer.Execute(sl)
    return folder


def regular_positions(n: int, dz: float = 5.0, origin=(1.0, 2.0, 3.0)) -> list[tuple[float, float, float]]:
    return [(origin[0], origin[1], origin[2] + dz * k) for k in range(n)]
