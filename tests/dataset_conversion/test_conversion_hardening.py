"""Hardening of the converters (issue 14): each test reproduces one silent wrong result or crash.

Stale siblings and sources changing under the checks, concurrent runs, another source into an
existing dataset, demographics, CT that is not in HU, strict listing every failure, duplicate
table columns, unwritable output, Ctrl-C, and the converter registry of the CLI.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from tests.conftest import BIN, run_cli
from conversion_fixtures import (assert_no_partial_output, dataset_files, make_cohort, make_pair, read_rows, report,
                                 write, write_manifest)
from nnunet_iph.dataset_conversion import convert_mistie, convert_multisite
from nnunet_iph.dataset_conversion.physionet import read_demographics, read_slice_table


def _row(sid: str, image: str, mask: str, **kw) -> dict:
    return {"subject_id": sid, "image": image, "mask": mask, "site": "s", "age": "60", "sex": "M", **kw}


def _like(arr: np.ndarray, ref: sitk.Image) -> sitk.Image:
    im = sitk.GetImageFromArray(arr)
    im.CopyInformation(ref)
    return im


def _label2(mask: sitk.Image) -> sitk.Image:
    """The same mask with label 2 instead of 1 (an invalid label for the hemorrhage dataset)."""
    return _like(sitk.GetArrayFromImage(mask) * 2, mask)


# ---- 1. the checks see exactly the bytes that are copied ------------------------------------------

@pytest.mark.parametrize("role", ["image", "mask"])
def test_stale_nii_beside_nii_gz_is_ignored(tmp_path, role):
    """A stale X.nii beside X.nii.gz: ITK would read the .nii while the .nii.gz bytes are copied."""
    img, mask = make_pair(lesion=2)
    write(img, tmp_path / "i.nii.gz")
    write(mask, tmp_path / "m.nii.gz")
    if role == "mask":  # good .nii.gz, stale .nii with labels {0, 2}
        write(_label2(mask), tmp_path / "m.nii")
    else:  # good .nii.gz, stale .nii of another size
        write(make_pair(shape=(6, 12, 9))[0], tmp_path / "i.nii")
    rows = [_row("good", "i.nii.gz", "m.nii.gz")]
    # the reverse: a defective .nii.gz hidden by a good stale .nii
    bad_img, bad_mask = ("ib.nii.gz", "m.nii.gz") if role == "image" else ("i.nii.gz", "mb.nii.gz")
    if role == "image":
        write(_like(np.full((6, 12, 10), -1024, np.int16), img), tmp_path / "ib.nii.gz")
        write(img, tmp_path / "ib.nii")
    else:
        write(_label2(mask), tmp_path / "mb.nii.gz")
        write(mask, tmp_path / "mb.nii")
    rows.append(_row("bad", bad_img, bad_mask))
    ds = convert_multisite(write_manifest(tmp_path / "m.csv", rows), 600, "Stale", tmp_path / "raw", progress=False)
    rep = report(ds)
    assert rep["good"]["fate"] == "converted" and rep["good"]["notes"] == ""
    assert (ds / "imagesTr" / "good_0000.nii.gz").read_bytes() == (tmp_path / "i.nii.gz").read_bytes()
    assert (ds / "labelsTr" / "good.nii.gz").read_bytes() == (tmp_path / "m.nii.gz").read_bytes()
    case = read_rows(ds / "cases.csv")[0]
    assert case["foreground_voxels"] == "12"  # 2 slices x 2 rows x 3 columns, from the .nii.gz
    assert case["size"] == "10x12x6"
    assert rep["bad"]["fate"] == "skipped"
    expect = (r"image .*ib\.nii\.gz: is constant" if role == "image"
              else r"mask .*mb\.nii\.gz: has unexpected label values \[2\]")
    assert re.search(expect, rep["bad"]["reason"]), rep["bad"]["reason"]
    assert_no_partial_output(ds)


def test_checks_run_on_the_copied_bytes(tmp_path, monkeypatch):
    """A source rewritten right after it was read must not land unchecked in labelsTr."""
    img, mask = make_pair(lesion=2)
    write(img, tmp_path / "i.nii.gz")
    src = write(mask, tmp_path / "m.nii.gz")
    checked = src.read_bytes()
    write(_label2(mask), tmp_path / "bad.nii.gz")
    orig = sitk.ReadImage

    def read_then_change(path, *args, **kwargs):
        out = orig(path, *args, **kwargs)
        if out.GetPixelID() == sitk.sitkUInt8 and src.read_bytes() == checked:  # the mask was read: now
            # another process rewrites it
            src.write_bytes((tmp_path / "bad.nii.gz").read_bytes())
        return out

    monkeypatch.setattr(sitk, "ReadImage", read_then_change)
    ds = convert_multisite(write_manifest(tmp_path / "m.csv", [_row("a", "i.nii.gz", "m.nii.gz")]), 601, "Race",
                           tmp_path / "raw", progress=False)
    assert src.read_bytes() != checked  # the source did change under the conversion
    out = ds / "labelsTr" / "a.nii.gz"
    assert out.read_bytes() == checked  # ... and the dataset holds exactly the bytes that were checked
    assert set(np.unique(sitk.GetArrayFromImage(orig(str(out))))) == {0, 1}


def test_two_files_for_one_case_in_a_release_folder_are_refused(tmp_path):
    """INSTANCE / PhysioNet layouts: 001.nii beside 001.nii.gz silently picked one of them."""
    from nnunet_iph.dataset_conversion import convert_instance, convert_physionet

    for i in range(2):
        img, mask = make_pair(seed=i)
        write(img, tmp_path / "inst" / "data" / f"00{i}.nii.gz")
        write(mask, tmp_path / "inst" / "label" / f"00{i}.nii.gz")
        write(img, tmp_path / "ctich" / "ct_scans" / f"{49 + i:03d}.nii.gz")
        write(mask, tmp_path / "ctich" / "masks" / f"{49 + i:03d}.nii.gz")
    write(make_pair(seed=5)[1], tmp_path / "inst" / "label" / "001.nii")  # a stale export
    write(make_pair(seed=5)[0], tmp_path / "ctich" / "ct_scans" / "050.nii")
    (tmp_path / "ctich" / "hemorrhage_diagnosis_raw_ct.csv").write_text(
        "PatientNumber,SliceNumber,Intraventricular,Intraparenchymal,Subarachnoid,Epidural,Subdural,No_Hemorrhage,"
        "Fracture_Yes_No\n" + "".join(f"{p},{k},0,0,0,0,0,{int(k not in (3, 4))},0\n" for p in (49, 50)
                                      for k in range(1, 7)))
    rep = report(convert_instance(tmp_path / "inst", 612, "TwoI", tmp_path / "raw", progress=False))
    assert rep["000"]["fate"] == "converted"
    assert re.search(r"inst/label: 2 files for case 001 \(001\.nii, 001\.nii\.gz\); remove all but one",
                     rep["001"]["reason"]), rep["001"]["reason"]
    rep = report(convert_physionet(tmp_path / "ctich", 613, "TwoP", tmp_path / "raw", progress=False))
    assert rep["049"]["fate"] == "converted"
    assert re.search(r"ct_scans: 2 files for patient 050 \(050\.nii\.gz, 050\.nii\)", rep["050"]["reason"])


# ---- 2. one conversion per dataset at a time ------------------------------------------------------

HOLD_SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from nnunet_iph.dataset_conversion import records

    ready, release = Path(sys.argv[3]), sys.argv[4]
    orig = records.Committer.commit

    def commit(self, *args):
        ready.touch()
        if release == "sleep":
            time.sleep(120)  # interrupted by the test
        while not Path(release).exists():
            time.sleep(0.05)
        orig(self, *args)

    records.Committer.commit = commit
    from nnunet_iph.cli import main
    sys.exit(main(["convert", "multisite", sys.argv[1], "-d", "602", "--name", "Hold", "--raw-root", sys.argv[2],
                   "--no-progress", "--workers", sys.argv[5]]))
""")


def _start_holder(tmp_path: Path, manifest: Path, release: str, workers: int = 1) -> tuple[subprocess.Popen, Path]:
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT, str(manifest), str(tmp_path / "raw"), str(ready),
                             release, str(workers)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the first conversion never reached its first commit"
        time.sleep(0.05)
    return proc, ready


def test_second_conversion_of_a_dataset_refuses_while_one_runs(tmp_path):
    manifest = make_cohort(tmp_path / "src", n=4)
    go = tmp_path / "go"
    first, _ = _start_holder(tmp_path, manifest, str(go))
    ds = (tmp_path / "raw" / "Dataset602_Hold").resolve()
    try:
        second = run_cli("nnunet-iph", "convert", "multisite", str(manifest), "-d", "602", "--name", "Hold",
                         "--raw-root", str(tmp_path / "raw"), "--no-progress", check=False, timeout=120)
    finally:
        go.touch()
        out, err = first.communicate(timeout=300)
    assert second.returncode == 2, second.stderr
    assert f"{ds}: another conversion (pid {first.pid}) is writing this dataset" in second.stderr
    assert "Traceback" not in second.stderr
    assert first.returncode == 0, err
    assert len(read_rows(ds / "cases.csv")) == 4 and json.loads((ds / "dataset.json").read_text())["numTraining"] == 4
    assert_no_partial_output(ds)
    # the lock went with its holder: the next run works and finds everything done
    again = run_cli("nnunet-iph", "convert", "multisite", str(manifest), "-d", "602", "--name", "Hold", "--raw-root",
                    str(tmp_path / "raw"), "--no-progress")
    assert "4 unchanged" in again.stderr


# ---- 3. another source into an existing dataset ------------------------------------------------------

def test_other_source_into_existing_dataset_needs_overwrite(tmp_path, capsys):
    first = make_cohort(tmp_path / "a", n=3)
    other = make_cohort(tmp_path / "b", n=2)
    ds = convert_multisite(first, 603, "Src", tmp_path / "raw", progress=False)
    before = {f: (ds / f).read_bytes() for f in dataset_files(ds) | {"dataset.json", "cases.csv"}}
    with pytest.raises(ValueError) as err:
        convert_multisite(other, 603, "Src", tmp_path / "raw", progress=False)
    msg = str(err.value)
    assert str(ds) in msg and str(first.resolve()) in msg and str(other.resolve()) in msg and "--overwrite" in msg
    assert {f: (ds / f).read_bytes() for f in before} == before  # nothing replaced
    convert_multisite(first, 603, "Src", tmp_path / "raw", progress=False)  # the same source: a resume
    assert "3 unchanged" in capsys.readouterr().err
    convert_multisite(other, 603, "Src", tmp_path / "raw", overwrite=True, progress=False)
    dj = json.loads((ds / "dataset.json").read_text())
    assert dj["numTraining"] == 2 and dj["nnunet_iph_conversion"]["source"] == str(other.resolve())
    assert sorted(r["source_image"] for r in read_rows(ds / "cases.csv")) == [
        str((tmp_path / "b" / "images" / f"sub{i:02d}.nii.gz").resolve()) for i in range(2)]


# ---- 4. demographics ----------------------------------------------------------------------------------

def test_demographics_normalised_and_implausible_values_blanked(tmp_path, capsys):
    img, mask = make_pair()
    write(img, tmp_path / "i.nii.gz")
    write(mask, tmp_path / "m.nii.gz")
    values = {"s1": ("abc", "F"), "s2": ("-5", "female"), "s3": ("250", "M"), "s4": ("61.5", "male"),
              "s5": ("40", "m"), "s6": ("", "x?")}
    rows = [_row(sid, "i.nii.gz", "m.nii.gz", age=a, sex=s) for sid, (a, s) in values.items()]
    ds = convert_multisite(write_manifest(tmp_path / "m.csv", rows), 604, "Demo", tmp_path / "raw", progress=False)
    cases = {r["case_id"]: r for r in read_rows(ds / "cases.csv")}
    assert {c: (r["age"], r["sex"]) for c, r in cases.items()} == {
        "s1": ("", "F"), "s2": ("", "F"), "s3": ("", "M"), "s4": ("61.5", "M"), "s5": ("40", "M"), "s6": ("", "")}
    assert "subject s1: age 'abc' is not a number -> left blank" in cases["s1"]["notes"]
    assert "subject s2: age '-5' outside the plausible range 0-120 years" in cases["s2"]["notes"]
    assert "subject s3: age '250' outside the plausible range" in report(ds)["s3"]["notes"]
    assert "subject s6: sex 'x?' not recognised" in cases["s6"]["notes"]
    assert cases["s4"]["notes"] == cases["s5"]["notes"] == ""
    err = capsys.readouterr().err
    assert "warning: subject s1: age 'abc'" in err and "warning: subject s6: sex 'x?'" in err


def test_mistie_demographics_normalised(tmp_path):
    img, mask = make_pair()
    write(img, tmp_path / "i.nii.gz")
    write(mask, tmp_path / "m.nii.gz")
    rows = [{"scan_id": f"M{i}", "phase": "II", "image": "i.nii.gz", "mask": "m.nii.gz", "age": age, "sex": sex}
            for i, (age, sex) in enumerate([("70", "Female"), ("300", "MALE")])]
    ds = convert_mistie(write_manifest(tmp_path / "t.csv", rows), 605, "MDemo", tmp_path / "raw", progress=False)
    cases = {r["case_id"]: r for r in read_rows(ds / "cases.csv")}
    assert (cases["M0"]["age"], cases["M0"]["sex"], cases["M1"]["age"], cases["M1"]["sex"]) == ("70", "F", "", "M")
    assert "subject M1: age '300' outside" in cases["M1"]["notes"]


# ---- 5. CT that is not in Hounsfield units ------------------------------------------------------------

def _not_hu(kind: str, ref: sitk.Image) -> sitk.Image:
    hu = sitk.GetArrayFromImage(ref).astype(np.float32)
    hu[0] = -1000  # air
    if kind == "8bit":  # brain window level 40 width 80, quantised to 0..255
        return _like(np.clip((hu - 0) * 255 / 80, 0, 255).round().astype(np.uint8), ref)
    if kind == "hu1000":
        return _like(hu / 1000, ref)
    return _like((hu + 1024).astype(np.uint16), ref)  # stored values without the rescale intercept


@pytest.mark.parametrize("kind, why", [
    ("8bit", r"no negative value and max <= 255: looks like an 8-bit windowed export"),
    ("hu1000", r"whole range within \[-2, 4\]: looks like HU/1000 or normalised"),
    ("offset", r"no negative value \(air would be about -1000 HU\)"),
])
def test_ct_not_in_hu_warns_and_converts(tmp_path, capsys, kind, why):
    img, mask = make_pair()
    write(_not_hu(kind, img), tmp_path / "i.nii.gz")
    write(mask, tmp_path / "m.nii.gz")
    write(img, tmp_path / "hu.nii.gz")
    rows = [_row("a", "i.nii.gz", "m.nii.gz"), _row("hu", "hu.nii.gz", "m.nii.gz")]
    ds = convert_multisite(write_manifest(tmp_path / "m.csv", rows), 606, "Units", tmp_path / "raw", progress=False)
    rep = report(ds)
    assert rep["a"]["fate"] == "converted" and rep["hu"]["notes"] == ""
    lo, hi = (float(v) for v in (sitk.GetArrayFromImage(_not_hu(kind, img)).min(),
                                 sitk.GetArrayFromImage(_not_hu(kind, img)).max()))
    pattern = rf"image .*i\.nii\.gz: intensity range {lo:g} to {hi:g} \({why}.*\), not Hounsfield units"
    assert re.search(pattern, rep["a"]["notes"]), rep["a"]["notes"]
    err = capsys.readouterr().err
    assert re.search("warning: " + pattern, err), err
    assert (ds / "imagesTr" / "a_0000.nii.gz").read_bytes() == (tmp_path / "i.nii.gz").read_bytes()  # unchanged
    convert_multisite(tmp_path / "m.csv", 606, "Units", tmp_path / "raw", progress=False)  # a resume warns again
    assert re.search("warning: " + pattern, capsys.readouterr().err)


# ---- 6. strict lists every failing subject ------------------------------------------------------------

def test_strict_lists_every_failing_subject(tmp_path):
    root = tmp_path / "src"
    make_cohort(root, n=3)
    img, mask = make_pair()
    write(_like(np.zeros((6, 12, 10), np.int16), img), root / "blank.nii.gz")
    write(_label2(mask), root / "two.nii.gz")
    rows = read_rows(root / "manifest.csv") + [
        _row("blank", "blank.nii.gz", "masks/sub00.nii.gz"), _row("two", "images/sub00.nii.gz", "two.nii.gz"),
        _row("gone", "nope.nii.gz", "masks/sub00.nii.gz"), _row("val", "images/sub00.nii.gz", "masks/sub00.nii.gz",
                                                                split="val")]
    manifest = write_manifest(root / "bad.csv", rows)
    for workers in (1, 2):
        with pytest.raises(ValueError) as err:
            convert_multisite(manifest, 607, "Strict", tmp_path / "raw", strict=True, num_workers=workers,
                              progress=False)
        msg = str(err.value)
        assert msg.startswith("strict: 4 of 7 subject(s) cannot be converted (nothing was written):")
        for line in (r"  blank: image .*blank\.nii\.gz: is constant", r"  two: mask .*two\.nii\.gz: has unexpected",
                     r"  gone: image .*nope\.nii\.gz: file not found", r"  val: split 'val' is neither"):
            assert re.search(line, msg), (line, msg)
        assert not (tmp_path / "raw" / "Dataset607_Strict").exists()


# ---- 7. duplicate columns and malformed rows in the tables ------------------------------------------

def test_mistie_duplicate_columns_refused(tmp_path):
    (tmp_path / "t.csv").write_text("scan_id,phase,image,age,Age\nA,II,a.nii.gz,50,60\n")
    with pytest.raises(ValueError, match=r"scan table .*t\.csv: duplicate column\(s\) age"):
        convert_mistie(tmp_path / "t.csv", 608, "Dup", tmp_path / "raw", progress=False)
    assert not (tmp_path / "raw").exists()


def test_mistie_row_with_wrong_field_count_is_skipped(tmp_path):
    img, mask = make_pair()
    write(img, tmp_path / "i.nii.gz")
    write(mask, tmp_path / "m.nii.gz")
    (tmp_path / "t.csv").write_text("scan_id,phase,image,mask,site\nA,II,i.nii.gz,m.nii.gz,s1\n"
                                    "B,II,i.nii.gz,m.nii.gz,s1,extra\n")
    ds = convert_mistie(tmp_path / "t.csv", 609, "Rows", tmp_path / "raw", progress=False)
    assert re.search(r"scan table .*t\.csv line 3: has 6 fields, header has 5", report(ds)["B"]["reason"])


def test_physionet_tables_duplicate_columns_refused(tmp_path):
    (tmp_path / "t.csv").write_text("PatientNumber,SliceNumber,Intraventricular,Intraparenchymal,Subarachnoid,"
                                    "Epidural,Subdural,No_Hemorrhage,Fracture_Yes_No,Epidural\n")
    with pytest.raises(ValueError, match=r"slice table .*t\.csv: duplicate column\(s\) epidural"):
        read_slice_table(tmp_path / "t.csv")
    (tmp_path / "d.csv").write_text("Patient Number,Age,Gender,Age (years)\n49,35,Male,36\n")
    with pytest.raises(ValueError, match=r"d\.csv: 2 age columns \(Age, Age \(years\)\)"):
        read_demographics(tmp_path / "d.csv")
    (tmp_path / "d.csv").write_text("Patient Number,Age,Gender\n49,35,Male\n50,40,Female\n49,53,Female\n")
    with pytest.raises(ValueError, match=r"d\.csv: patient 49 is listed twice"):
        read_demographics(tmp_path / "d.csv")


# ---- 8. unwritable output, Ctrl-C -------------------------------------------------------------------

@contextlib.contextmanager
def _read_only(path: Path):
    """A folder nobody may write into (root ignores permission bits: make it immutable instead)."""
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root on a file system without chattr +i: cannot make a folder read-only")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_unwritable_output_is_a_clear_error(tmp_path, capsys):
    from nnunet_iph.cli import main

    manifest = make_cohort(tmp_path / "src", n=2)
    raw = tmp_path / "raw"
    raw.mkdir()
    args = ["convert", "multisite", str(manifest), "-d", "610", "--name", "Ro", "--raw-root", str(raw), "--no-progress"]
    with _read_only(raw):
        assert main(args) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(rf"nnunet-iph convert: error: {re.escape(str(raw))}/Dataset610_Ro: cannot write there "
                        rf"\([^)]+\); check the permissions of the output folder \(--raw-root / \$nnUNet_raw\)\n",
                        err), err
    assert main(args) == 0
    ds = raw / "Dataset610_Ro"
    make_cohort(tmp_path / "src", n=3)  # a changed source, into a dataset folder that is now read-only
    with _read_only(ds):
        assert main(args) == 2
    assert f"error: {ds}: cannot write there" in capsys.readouterr().err
    assert main(args) == 0 and len(read_rows(ds / "cases.csv")) == 3


def test_disk_full_stops_the_run_instead_of_skipping_cases(tmp_path, monkeypatch):
    import errno

    from nnunet_iph.dataset_conversion import case

    manifest = make_cohort(tmp_path / "src", n=3)
    convert_multisite(manifest, 614, "Full", tmp_path / "raw", progress=False)
    ds = tmp_path / "raw" / "Dataset614_Full"
    make_cohort(tmp_path / "src", n=4)  # rewritten sources and one more: every case is converted again

    def full(src, dst, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(src))

    monkeypatch.setattr(case.shutil, "copyfile", full)
    with pytest.raises(ValueError, match=r"cannot write .*staging/sub0\d\.image\.source\.nii\.gz: No space left "
                                         r"on device; conversion stopped \(re-run to finish it\)"):
        convert_multisite(manifest, 614, "Full", tmp_path / "raw", progress=False)
    assert len(read_rows(ds / "cases.csv")) == 3 and {r["fate"] for r in read_rows(ds / "conversion_report.csv")} == {
        "converted"}  # the report of the last complete run: sub03 was not called defective
    monkeypatch.undo()
    convert_multisite(manifest, 614, "Full", tmp_path / "raw", progress=False)
    assert len(read_rows(ds / "cases.csv")) == 4


def test_ctrl_c_gives_one_line_and_cleans_up(tmp_path):
    manifest = make_cohort(tmp_path / "src", n=6)
    proc, _ = _start_holder(tmp_path, manifest, "sleep", workers=2)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines() == [
        "nnunet-iph convert multisite: interrupted; the dataset is incomplete (no dataset.json) until the same "
        "command is run again"], err
    ds = tmp_path / "raw" / "Dataset602_Hold"
    assert not (ds / "dataset.json").exists()
    assert not (ds / ".nnunet_iph" / "staging").exists()
    assert not [f for f in dataset_files(ds) if Path(f).name.startswith(".")]
    run_cli("nnunet-iph", "convert", "multisite", str(manifest), "-d", "602", "--name", "Hold", "--raw-root",
            str(tmp_path / "raw"), "--no-progress")
    assert_no_partial_output(ds)
    assert len(read_rows(ds / "cases.csv")) == 6


# ---- 9./10. the CLI's converter registry, the package's public names ----------------------------------

def test_cli_runs_the_registered_converter(tmp_path, monkeypatch, capsys):
    from nnunet_iph.cli import main
    from nnunet_iph.dataset_conversion import registry

    calls = []

    def add(p):
        p.add_argument("src")
        p.add_argument("--flavour", default="plain")

    def run(args, common):
        calls.append((args.src, args.flavour, common["strict"], common["raw_root"]))
        return tmp_path

    real = registry.converters
    fake = registry.Converter("fake", "a test source", add, run)
    monkeypatch.setattr(registry, "converters", lambda: [*real(), fake])
    assert main(["convert", "fake", "S", "--flavour", "x", "-d", "611", "--name", "F", "--strict",
                 "--raw-root", "R"]) == 0
    assert calls == [("S", "x", True, "R")]
    assert capsys.readouterr().out.strip() == str(tmp_path)
    assert [c.name for c in real()] == ["multisite", "instance", "physionet", "mistie"]


def test_public_imports_and_help():
    import nnunet_iph.dataset_conversion as dc
    from nnunet_iph.dataset_conversion import core

    for name in dc.__all__:
        assert getattr(dc, name) is not None, name
    assert not hasattr(core, "_init_worker") and not hasattr(core, "ProcessPoolExecutor")
    out = subprocess.run([str(BIN / "nnunet-iph"), "convert", "multisite", "--help"], capture_output=True, text=True,
                         timeout=120).stdout
    assert "f/female" in " ".join(out.split()) and "left blank" in out
