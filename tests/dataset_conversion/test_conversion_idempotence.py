"""Re-runs are idempotent; a killed conversion leaves no half-written case and completes when re-run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conversion_fixtures import (assert_no_partial_output, assert_same_image, dataset_files, make_cohort, make_pair,
                                 read_rows, write, write_manifest)
from nnunet_iph.dataset_conversion import convert_multisite

META_FILES = ("dataset.json", "cases.csv", "conversion_report.csv", "splits_final.json", "splits_kfold.json",
              "splits_loso.json")


def _snapshot(ds: Path) -> dict[str, tuple[bytes, int]]:
    out = {}
    for rel in sorted(dataset_files(ds)) + [m for m in META_FILES if (ds / m).exists()]:
        p = ds / rel
        out[rel] = (p.read_bytes(), p.stat().st_mtime_ns)
    return out


def test_rerun_is_idempotent(tmp_path, capsys):
    manifest = make_cohort(tmp_path / "src", n=6)
    ds = convert_multisite(manifest, 540, "Idem", tmp_path / "raw", test_fraction=0.3, progress=False)
    first = _snapshot(ds)
    for workers in (1, 2):
        convert_multisite(manifest, 540, "Idem", tmp_path / "raw", test_fraction=0.3, num_workers=workers,
                          progress=False)
        assert _snapshot(ds) == first  # same bytes, and nothing was even rewritten (same mtimes)
    assert "6 converted (4 train, 2 test; 6 unchanged)" in capsys.readouterr().err


def test_rerun_redoes_only_what_changed(tmp_path):
    root = tmp_path / "src"
    manifest = make_cohort(root, n=5)
    ds = convert_multisite(manifest, 541, "Delta", tmp_path / "raw", progress=False)
    before = _snapshot(ds)
    # 1) a changed source image
    img, _ = make_pair(seed=42)
    write(img, root / "images" / "sub01.nii.gz")
    # 2) a deleted output file
    (ds / "labelsTr" / "sub02.nii.gz").unlink()
    # 3) a subject removed from the manifest, 4) one moved to the test split
    rows = read_rows(manifest)
    rows = [r for r in rows if r["subject_id"] != "sub03"]
    for r in rows:
        r["split"] = "test" if r["subject_id"] == "sub04" else ""
    manifest2 = write_manifest(root / "manifest2.csv", rows)
    convert_multisite(manifest2, 541, "Delta", tmp_path / "raw", overwrite=True, progress=False)
    after = _snapshot(ds)
    assert after["imagesTr/sub00_0000.nii.gz"] == before["imagesTr/sub00_0000.nii.gz"]  # untouched
    assert_same_image(root / "images" / "sub01.nii.gz", ds / "imagesTr" / "sub01_0000.nii.gz")
    assert (ds / "labelsTr" / "sub02.nii.gz").is_file()
    assert not any("sub03" in f for f in dataset_files(ds))
    assert not (ds / ".nnunet_iph" / "cases" / "sub03.json").exists()
    assert (ds / "imagesTs" / "sub04_0000.nii.gz").is_file() and not (ds / "imagesTr" / "sub04_0000.nii.gz").exists()
    assert {r["case_id"] for r in read_rows(ds / "cases.csv")} == {"sub00", "sub01", "sub02", "sub04"}
    assert_no_partial_output(ds)
    # changed options redo every case
    convert_multisite(manifest2, 541, "Delta", tmp_path / "raw", reorient="RAS", progress=False)  # same source now
    assert sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(
        sitk.ReadImage(str(ds / "imagesTr" / "sub00_0000.nii.gz")).GetDirection()) == "RAS"


def test_leftovers_of_a_killed_run_are_cleaned(tmp_path):
    manifest = make_cohort(tmp_path / "src", n=3)
    ds = convert_multisite(manifest, 542, "Left", tmp_path / "raw", progress=False)
    # what a SIGKILL during an atomic write / staging leaves behind
    (ds / "imagesTr" / ".sub00_0000.nii.gz.abc123.tmp.nii.gz").write_bytes(b"partial")
    (ds / ".nnunet_iph" / "staging").mkdir(exist_ok=True)
    (ds / ".nnunet_iph" / "staging" / "sub01.image.nii.gz").write_bytes(b"partial")
    (ds / "imagesTr" / "stray_0000.nii.gz").write_bytes(b"not ours")
    convert_multisite(manifest, 542, "Left", tmp_path / "raw", progress=False)
    assert_no_partial_output(ds)
    assert not (ds / "imagesTr" / "stray_0000.nii.gz").exists()
    assert not (ds / ".nnunet_iph" / "staging").exists()


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from nnunet_iph.dataset_conversion import records

    kill_at, between = int(sys.argv[3]), sys.argv[5] == "between"
    orig = records.Committer.commit
    count = [0]

    def commit(self, e, staged, fp, record):
        count[0] += 1
        if count[0] == kill_at:
            if between:  # worst moment: the label is in place, the image not yet
                os.replace(staged["label"], self.ds / e.outputs["label"])
            os.kill(os.getpid(), signal.SIGKILL)
        orig(self, e, staged, fp, record)

    records.Committer.commit = commit
    from nnunet_iph.dataset_conversion import convert_multisite
    convert_multisite(sys.argv[1], 543, "Kill", sys.argv[2], num_workers=int(sys.argv[4]), progress=False)
""")


@pytest.mark.parametrize("workers, moment", [(1, "after"), (2, "after"), (1, "between")])
def test_killed_conversion_leaves_no_half_case_and_completes(tmp_path, workers, moment):
    manifest = make_cohort(tmp_path / "src", n=6)
    raw = tmp_path / "raw"
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(manifest), str(raw), "4", str(workers), moment],
                          capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -9, proc.stderr
    ds = raw / "Dataset543_Kill"
    assert not (ds / "dataset.json").exists()  # no dataset.json = incomplete, nnU-Net refuses it
    files = dataset_files(ds)
    images = {f[len("imagesTr/"):-len("_0000.nii.gz")] for f in files if f.startswith("imagesTr/")}
    labels = {f[len("labelsTr/"):-len(".nii.gz")] for f in files if f.startswith("labelsTr/")}
    assert len(images) == 3 and images <= labels  # 3 whole cases; never an image without its label
    assert len(labels - images) == (1 if moment == "between" else 0)
    assert not [f for f in files if Path(f).name.startswith(".")]
    for case in images:  # what is there is complete and lossless
        assert_same_image(tmp_path / "src" / "images" / f"{case}.nii.gz", ds / "imagesTr" / f"{case}_0000.nii.gz")
        assert_same_image(tmp_path / "src" / "masks" / f"{case}.nii.gz", ds / "labelsTr" / f"{case}.nii.gz")

    convert_multisite(manifest, 543, "Kill", raw, num_workers=workers, progress=False)
    assert_no_partial_output(ds)
    assert (ds / "dataset.json").is_file()
    reference = convert_multisite(manifest, 544, "Kill", tmp_path / "ref", progress=False)
    for rel in dataset_files(reference) | {"cases.csv", "splits_final.json", "conversion_report.csv"}:
        assert (ds / rel).read_bytes() == (reference / rel).read_bytes(), rel
    assert dataset_files(ds) == dataset_files(reference)
    np.testing.assert_equal(len(read_rows(ds / "cases.csv")), 6)
