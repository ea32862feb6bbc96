"""Reading and writing the files every command shares.

Reading: :func:`read_image` is the one reader for inputs (converters, evaluate, predict,
postprocess). It refuses what SimpleITK would otherwise read without complaint: truncated NIfTI
files (the missing voxels come back as zeros), empty files, and it reads exactly the named file
even when a stale sibling (``X.nii`` beside ``X.nii.gz``) would shadow it inside ITK.

Writing: a killed process never leaves a half-written image, CSV or JSON behind. Everything is
written to a hidden temporary name in the destination folder and renamed into place
(``os.replace`` is atomic on POSIX within one file system); the result gets the mode a plain
``open()`` would give it under the current umask (``mkstemp`` alone would leave it 0600).
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import SimpleITK as sitk


NIFTI_SUFFIXES = (".nii.gz", ".nii")
GZIP_MAGIC = b"\x1f\x8b"


class InputError(ValueError):
    """A defect in an input file; the message names the file and the problem."""


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def is_nifti(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def _shadowing_siblings(path: Path) -> list[Path]:
    """Files ITK's NIfTI reader may open instead of ``path`` (it tries ``.nii`` before ``.nii.gz``,
    and ``.hdr``/``.img`` pairs)."""
    name = path.name
    stem = name[:-7] if name.lower().endswith(".nii.gz") else name[:-4] if name.lower().endswith(".nii") else None
    if stem is None:
        return []
    candidates = [stem + ext for ext in (".nii", ".nii.gz", ".hdr", ".hdr.gz", ".img", ".img.gz")]
    return [path.with_name(c) for c in candidates if c != name and path.with_name(c).exists()]


def read_image(path: str | os.PathLike, role: str = "image", *, check_finite: bool = True) -> sitk.Image:
    """Read one image file exactly as named; every failure is an :class:`InputError` naming the file.

    ``check_finite``: refuse NaN/inf voxels of float NIfTI data (SimpleITK turns NaN into 0).
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{role} {p}: file not found")
    if p.is_dir():
        raise InputError(f"{role} {p}: is a folder, expected an image file")
    if p.stat().st_size == 0:
        raise InputError(f"{role} {p}: empty file (0 bytes)")
    nifti = is_nifti(p)
    if nifti:
        check_nifti_complete(p, role)
    try:
        if nifti and _shadowing_siblings(p):
            # read through a link in a private folder, where no sibling can take its place
            with tempfile.TemporaryDirectory(prefix=".iph-read-") as tmp:
                link = Path(tmp) / ("x.nii.gz" if p.name.lower().endswith(".gz") else "x.nii")
                link.symlink_to(p.resolve())
                image = sitk.ReadImage(str(link))
        else:
            image = sitk.ReadImage(str(p))
    except RuntimeError as err:
        raise InputError(f"{role} {p}: unreadable ({sitk_message(err)})") from None
    if check_finite and nifti and image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        check_nifti_finite(p, role)
    return image


def sitk_message(err: Exception) -> str:
    """The useful last line of a SimpleITK exception (its first lines are C++ source paths)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    msg = lines[-1] if lines else type(err).__name__
    return msg.replace("sitk::ERROR: ", "")


def _nifti_data_end(head: bytes) -> int | None:
    """Byte offset where the voxel data of a NIfTI-1/-2 file ends, from its header; None if not NIfTI."""
    for endian in "<>":
        if len(head) < 4:
            return None
        (size,) = struct.unpack(endian + "i", head[:4])
        if size == 348 and len(head) >= 348:
            dims = struct.unpack(endian + "8h", head[40:56])
            bitpix = struct.unpack(endian + "h", head[72:74])[0]
            offset = int(struct.unpack(endian + "f", head[108:112])[0])
        elif size == 540 and len(head) >= 540:
            bitpix = struct.unpack(endian + "h", head[14:16])[0]
            dims = struct.unpack(endian + "8q", head[16:80])
            offset = struct.unpack(endian + "q", head[168:176])[0]
        else:
            continue
        n = 1
        for d in dims[1: max(0, min(int(dims[0]), 7)) + 1]:
            n *= max(int(d), 1)
        return max(offset, size) + n * bitpix // 8
    return None


def check_nifti_complete(path: Path, role: str) -> None:
    """Refuse truncated NIfTI files: SimpleITK reads them without error and fills the rest with zeros.

    Cheap for intact files: the header gives the data size and the gzip trailer the uncompressed size;
    only when these disagree is the stream decompressed to find out.
    """
    with open(path, "rb") as fh:
        magic = fh.read(2)
        if magic == GZIP_MAGIC:
            fh.seek(-4, os.SEEK_END)
            isize = struct.unpack("<I", fh.read(4))[0]
            try:
                with gzip.open(path, "rb") as gz:
                    head = gz.read(540)
            except (OSError, EOFError, zlib.error) as err:
                raise InputError(f"{role} {path}: truncated or corrupt gzip stream ({err}); "
                                 f"the file is incomplete") from None
            need = _nifti_data_end(head)
            if need is None or isize == need % (1 << 32):
                return
            total = 0
            try:
                with gzip.open(path, "rb") as gz:
                    while chunk := gz.read(1 << 22):
                        total += len(chunk)
            except (EOFError, OSError, zlib.error) as err:
                raise InputError(f"{role} {path}: truncated or corrupt gzip stream ({err}); "
                                 f"the file is incomplete") from None
        else:
            fh.seek(0)
            need = _nifti_data_end(fh.read(540))
            if need is None:
                return
            total = path.stat().st_size
    if total < need:
        raise InputError(f"{role} {path}: truncated: {total} bytes of voxel data and header, the "
                         f"header needs {need}")


def check_nifti_finite(path: Path, role: str) -> None:
    """NaN/inf in float NIfTI data: SimpleITK's NIfTI reader turns NaN into 0, so look at the raw data."""
    try:
        import nibabel
    except ImportError:  # pragma: no cover - nibabel comes with nnunetv2
        return
    arr = np.asanyarray(nibabel.load(str(path)).dataobj)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InputError(f"{role} {path}: contains {int(np.isnan(arr).sum())} NaN and "
                         f"{int(np.isinf(arr).sum())} infinite voxel values")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` only if the block succeeds.

    The temporary name keeps the full suffix (``.nii.gz``) so writers that pick the format from
    the extension still work.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes),
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_image(image: sitk.Image, path: str | os.PathLike, compress: bool = True) -> Path:
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=compress)
    return Path(path)


def write_text(text: str, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    return write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n", path)


def write_csv(frame: "pandas.DataFrame", path: str | os.PathLike) -> Path:  # noqa: F821
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)
