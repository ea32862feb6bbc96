"""volumes.csv + qc/ + index.html + patients.csv: write_prediction_outputs and ``nnunet-iph volumes``."""

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from nnunet_iph import __version__
from nnunet_iph.inference.outputs import write_prediction_outputs
from nnunet_iph.inference.patients import patients_table, read_patient_map
from nnunet_iph.inference.volumes import PROVENANCE_COLUMNS, VOLUME_COLUMNS
from tests.conftest import run_cli

SPACING = (0.5, 0.6, 5.0)


def _write(arr, path, dtype=np.uint8, spacing=SPACING):
    img = sitk.GetImageFromArray(arr.astype(dtype))
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))
    return path


def _case(folder: Path, case: str, n_px: int, ct_folder: Path | None = None):
    """Mask: a box of n_px x 10 px x 2 slices (n_px * 10 * 2 * 1.5 mm3); CT 30 HU with the box at 70 HU."""
    mask = np.zeros((6, 32, 40))
    mask[2:4, 5:15, 5:5 + n_px] = 1
    _write(mask, folder / f"{case}.nii.gz")
    if ct_folder is not None:
        _write(30 + 40 * mask - 1000 * (np.indices(mask.shape)[2] < 2), ct_folder / f"{case}_0000.nii.gz", np.int16)
    return n_px * 10 * 2 * 1.5 / 1000


@pytest.fixture
def prediction(tmp_path):
    out, cts = tmp_path / "pred", tmp_path / "ct"
    out.mkdir()
    cts.mkdir()
    ml = {c: _case(out, c, n, cts) for c, n in (("a", 20), ("b", 4))}
    return out, cts, ml


def test_prediction_outputs(prediction):
    out, cts, ml = prediction
    cases = {c: [str(cts / f"{c}_0000.nii.gz")] for c in ml}
    csv = write_prediction_outputs(out, cases, ".nii.gz", {"background": 0, "hemorrhage": 1}, pipeline="single",
                                   models=["Dataset1__nnUNetTrainer__nnUNetPlans__3d_fullres"])
    table = pd.read_csv(csv)
    assert list(table.columns) == [*VOLUME_COLUMNS, *PROVENANCE_COLUMNS]
    assert table["hemorrhage_ml"].tolist() == pytest.approx([ml["a"], ml["b"]])
    # box 10 px x 0.5 mm (x) by 10 px x 0.6 mm (y), 2 slices: ABC/2 = the box volume (A * B = 2ab)
    assert table["abc2_ml"].tolist() == pytest.approx([ml["a"], ml["b"]], abs=1e-6)
    assert table["abc2_c_mm"].tolist() == [10.0, 10.0] and table["intracranial_ml"].isna().all()
    assert set(table["pipeline"]) == {"single"} and set(table["nnunet_iph_version"]) == {__version__}
    for c in ml:
        png = (out / "qc" / f"{c}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "index.html").read_text(encoding="utf-8")
    assert 'src="qc/a.png"' in page and 'href="volumes.csv"' in page
    assert "http" not in page and "<script" not in page  # self-contained, relative links only
    assert not list(out.glob(".*"))  # no temporary file left over


def test_volumes_cli_qc_and_stale_files(prediction):
    out, cts, ml = prediction
    report = out.parent / "report"
    (report / "qc").mkdir(parents=True)
    (report / "patients.csv").write_text("stale\n")
    run_cli("nnunet-iph", "volumes", str(out), "-o", str(report / "volumes.csv"), "--images", str(cts), "-q")
    assert (report / "qc" / "a.png").is_file() and not (report / "patients.csv").exists()
    page = (report / "index.html").read_text(encoding="utf-8")
    assert 'href="volumes.csv"' in page and 'src="qc/b.png"' in page
    run_cli("nnunet-iph", "volumes", str(out), "-o", str(report / "volumes.csv"), "--no-qc", "-q")
    assert not (report / "qc" / "a.png").exists()  # would show an earlier run's outline
    assert "<img" not in (report / "index.html").read_text(encoding="utf-8")
    proc = run_cli("nnunet-iph", "volumes", str(out), "-o", str(report / "v.csv"), "--qc", check=False)
    assert proc.returncode == 2 and "--qc needs --images" in proc.stderr


def test_volumes_cli_takes_provenance_from_a_prediction_folder(prediction, tmp_path):
    out, _, _ = prediction
    (out / "pipeline.json").write_text('{"pipeline": "planes", "models": ["/r/D/Tr__P_axial__2d", "/r/D/Tr__P_c__2d"]}')
    run_cli("nnunet-iph", "volumes", str(out), "-o", str(tmp_path / "v.csv"), "-q")
    table = pd.read_csv(tmp_path / "v.csv")
    assert set(table["model"]) == {"Tr__P_axial__2d; Tr__P_c__2d"} and set(table["pipeline"]) == {"planes"}


@pytest.mark.parametrize("bad", ["ct", "probabilities", "truncated"])
def test_bad_mask_names_the_file_and_writes_nothing(prediction, tmp_path, bad):
    out, cts, _ = prediction
    target = out / "b.nii.gz"
    if bad == "ct":
        shutil.copy(cts / "b_0000.nii.gz", target)
        expected = "not a label image"
    elif bad == "probabilities":
        _write(np.full((4, 4, 4), 0.4), target, np.float32)
        expected = "non-integer values"
    else:
        _write(np.random.default_rng(0).integers(0, 2, (6, 32, 40)), target)  # incompressible
        target.write_bytes(target.read_bytes()[:-500])
        expected = "truncated|incomplete|corrupt"
    report = tmp_path / "report"
    report.mkdir()
    (report / "volumes.csv").write_text("previous\n")
    proc = run_cli("nnunet-iph", "volumes", str(out), "-o", str(report / "volumes.csv"), "--images", str(cts),
                   check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert str(target) in proc.stderr and pd.Series([proc.stderr]).str.contains(expected).all()
    assert (report / "volumes.csv").read_text() == "previous\n"  # the old result stays, nothing half-written
    assert sorted(p.name for p in report.iterdir()) == ["volumes.csv"]


def test_ct_on_another_grid_is_refused(prediction, tmp_path):
    out, cts, _ = prediction
    _write(np.zeros((6, 32, 41)), cts / "a_0000.nii.gz", np.int16)
    proc = run_cli("nnunet-iph", "volumes", str(out), "-o", str(tmp_path / "v.csv"), "--images", str(cts),
                   check=False)
    assert proc.returncode == 2 and "a_0000.nii.gz: not on the grid of its mask" in proc.stderr
    assert not (tmp_path / "v.csv").exists()


def test_brain_masks_fill_intracranial_volume(prediction, tmp_path):
    out, _, _ = prediction
    brains = tmp_path / "brains"
    brains.mkdir()
    brain = np.ones((6, 32, 40))
    brain[0] = 0  # the top slice lies outside the skull
    _write(brain, brains / "a.nii.gz")
    _write(np.ones((6, 32, 40)), brains / "b.nii.gz")  # the whole field of view: a pass-through, no volume
    run_cli("nnunet-iph", "volumes", str(out), "-o", str(tmp_path / "v.csv"), "--brain-masks", str(brains), "-q")
    table = pd.read_csv(tmp_path / "v.csv").set_index("case")
    assert table.loc["a", "intracranial_ml"] == pytest.approx(5 * 32 * 40 * 1.5 / 1000)
    assert np.isnan(table.loc["b", "intracranial_ml"])


# ----------------------------------------------------------------------------- patients

def _map(tmp_path, text):
    path = tmp_path / "map.csv"
    path.write_text(text)
    return path


def test_expansion_flags_by_hand(tmp_path):
    """P1: 10 -> 13.3 mL is +33 % (flag), P2: 30 -> 35.9 (+5.9 mL, +19.7 %: no) -> 36 mL (+6 mL: flag),
    P3: 0 -> 5 mL (relative growth undefined, < 6 mL: no); rows come out in time order."""
    vol = pd.DataFrame({"case": ["p1a", "p1b", "p2c", "p2a", "p2b", "p3a", "p3b"],
                        "hemorrhage_ml": [10.0, 13.3, 36.0, 30.0, 35.9, 0.0, 5.0]})
    text = ("case,patient,order,phase\np1b,P1,1,follow-up\np1a,P1,0,baseline\np2a,P2,0,\np2b,P2,1,\n"
            "p2c,P2,2,\np3a,P3,0,\np3b,P3,1,\n")
    table, unmapped = patients_table(vol, *read_patient_map(_map(tmp_path, text)))
    assert unmapped == []
    assert table["case"].tolist() == ["p1a", "p1b", "p2a", "p2b", "p2c", "p3a", "p3b"]
    assert table["expansion"].tolist() == [None, True, None, False, True, None, False]
    assert table["growth_ml"].tolist() == pytest.approx([0, 3.3, 0, 5.9, 6.0, 0, 5.0])
    assert table["growth_pct"].iloc[1] == pytest.approx(33.0) and np.isnan(table["growth_pct"].iloc[6])
    assert table["patient_expansion"].tolist() == [True, True, True, True, True, False, False]
    assert table["phase"].iloc[1] == "follow-up"


def test_times_as_dates_and_map_errors(tmp_path):
    vol = pd.DataFrame({"case": ["x1", "x2", "y"], "hemorrhage_ml": [20.0, 26.0, 1.0]})
    table, unmapped = patients_table(vol, *read_patient_map(_map(
        tmp_path, "case,patient,time\nx2,X,2024-03-02 08:00\nx1,X,2024-03-01 14:30\n")))
    assert table["case"].tolist() == ["x1", "x2"] and table["expansion"].tolist() == [None, True]
    assert unmapped == ["y"]
    for text, message in (("case,patient\nx1,X\n", "one of time / order"),
                          ("case,patient,order\nx1,X,0\nx1,X,1\n", "x1 is listed twice"),
                          ("case,patient,order\nx1,X,0\nx2,X,0\n", "same order"),
                          ("case,patient,time\nx1,X,0\nx2,X,2024-01-01\n", "neither a number"),
                          ("case,patient,order\nx1,X,\n", "empty order in line 2")):
        with pytest.raises(ValueError, match=message):
            read_patient_map(_map(tmp_path, text))
    with pytest.raises(ValueError, match="have no mask: z"):
        patients_table(vol, *read_patient_map(_map(tmp_path, "case,patient,order\nx1,X,0\nz,X,1\n")))


def test_volumes_cli_writes_patients_csv(prediction, tmp_path):
    out, _, ml = prediction
    path = _map(tmp_path, "case,patient,order\nb,P,0\na,P,1\n")
    proc = run_cli("nnunet-iph", "volumes", str(out), "-o", str(tmp_path / "v.csv"), "--patients", str(path))
    table = pd.read_csv(tmp_path / "patients.csv")
    assert table["case"].tolist() == ["b", "a"]  # b (0.12 mL) -> a (0.6 mL): +400 %
    assert table["expansion"].fillna("").astype(str).tolist() == ["", "True"]
    page = (tmp_path / "index.html").read_text()
    assert "patients.csv" in proc.stdout and 'href="patients.csv"' in page and '<tr class="expansion">' in page
    bad = _map(tmp_path, "case,patient,order\nb,P,0\nq,P,1\n")
    proc = run_cli("nnunet-iph", "volumes", str(out), "-o", str(tmp_path / "w.csv"), "--patients", str(bad),
                   check=False)
    assert proc.returncode == 2 and "map.csv: 1 mapped case(s) have no mask: q" in proc.stderr
    assert not (tmp_path / "w.csv").exists()


# ----------------------------------------------------------------------------- the page in a browser

CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless Chromium not installed (apt-get install -y chromium)")
def test_index_html_renders_in_headless_chromium(prediction):
    out, cts, ml = prediction
    write_prediction_outputs(out, {c: [str(cts / f"{c}_0000.nii.gz")] for c in ml}, ".nii.gz", pipeline="single")
    shot = out.parent / "shot.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", f"--user-data-dir={profile}", f"--screenshot={shot}",
                        "--window-size=1000,1400", (out / "index.html").as_uri()],
                       capture_output=True, timeout=120, check=False)
    assert shot.is_file(), "chromium wrote no screenshot"
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))[..., :3]
    assert pixels.std() > 0.05  # not a blank page: text, table lines and the CT pictures
    red = (pixels[..., 0] > 0.8) & (pixels[..., 1] < 0.35) & (pixels[..., 2] < 0.35)
    assert red.sum() > 50  # the outlines: the QC pictures were loaded through their relative links


# ----------------------------------------------------------------------------- real scans

@pytest.mark.shared_data
def test_real_scans(physionet_dir, tmp_path):
    """Three PhysioNet scans: volume = voxels x voxel size, the ABC/2 slice is one the radiologists' slice
    table flags as hemorrhage (SliceNumber k = array index k - 1 along the third axis), a picture each."""
    from nnunet_iph.inference.outputs import CaseJob, write_outputs

    flagged = pd.read_csv(physionet_dir / "hemorrhage_diagnosis_raw_ct.csv")
    flagged = flagged[flagged["No_Hemorrhage"] == 0]
    cases = ["049", "053", "074"]  # 074: gantry-tilt shear in its sform
    jobs = [CaseJob(c, str(physionet_dir / "masks" / f"{c}.nii.gz"), str(physionet_dir / "ct_scans" / f"{c}.nii.gz"))
            for c in cases]
    res = write_outputs(jobs, tmp_path / "volumes.csv")
    table = pd.read_csv(res.volumes_csv).set_index("case")
    for c in cases:
        img = sitk.ReadImage(str(physionet_dir / "masks" / f"{c}.nii.gz"))
        voxels = int(sitk.GetArrayViewFromImage(img).sum())
        row = table.loc[int(c)]
        assert row["hemorrhage_ml"] == pytest.approx(voxels * np.prod(img.GetSpacing()) / 1000, rel=1e-6)
        assert row["abc2_slice"] + 1 in set(flagged.loc[flagged["PatientNumber"] == int(c), "SliceNumber"])
        assert 0 < row["abc2_c_mm"] <= 5 * img.GetSize()[2] and row["abc2_ml"] > 0
        assert (tmp_path / "qc" / f"{c}.png").stat().st_size > 10_000
    assert res.seconds_per_case < 5  # ~0.2 s CPU per case; generous for a loaded machine


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, -1, 0, 0, 0, 1), (-1, 0, 0, 0, 1, 0, 0, 0, -1),
                                       (0, 0, 1, 1, 0, 0, 0, -1, 0)])
def test_qc_slices_are_shown_radiologically(direction):
    """A voxel at the patient's right, anterior, inferior corner lands at the top left of the first tile
    (radiological: patient's right on the left, anterior up), whatever the storage order and signs."""
    from nnunet_iph.inference.qc import display_order, display_view

    d = np.asarray(direction, float).reshape(3, 3)
    shape = (4, 5, 6)  # numpy (k, j, i)
    # physical LPS corner (min x = right, min y = anterior, min z = inferior) in index coordinates
    index = [0 if d[:, c].sum() > 0 else shape[2 - c] - 1 for c in range(3)]  # per index axis i, j, k
    arr = np.zeros(shape)
    arr[index[2], index[1], index[0]] = 1
    order, flips = display_order(direction)
    view = display_view(arr, order, flips)
    assert view[0, 0, 0] == 1 and view.sum() == 1
