"""Model zips: inspection, refusal, install/reuse/replace, choice of model; one slow end-to-end run.

The fast tests use small synthetic zips laid out as ``nnUNetv2_export_model_to_zip`` writes them
(``DatasetNNN_Name/TRAINER__PLANS__CONFIG/{plans.json,dataset.json,fold_X/checkpoint_final.pth}``).
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest

from nnunet_iph.inference import model_zip
from nnunet_iph.inference.model_zip import choose_models, inspect_zip, install
from tests.conftest import run_cli

DS = "Dataset777_ZipTest"
PLANS_2D = {"plans_name": "nnUNetPlans", "configurations": {"2d": {"patch_size": [32, 32]}}}
CASCADE_PLANS = {"plans_name": "nnUNetPlans_cascade",
                 "configurations": {"2d_coarse": {"patch_size": [32, 32]},
                                    "3d_base": {"patch_size": [8, 8, 8]},
                                    "3d_fine": {"inherits_from": "3d_base", "previous_stage": "2d_coarse"}}}


def model_files(identifier: str, weights: bytes = b"weights-A", folds=(0,), plans: dict = PLANS_2D) -> dict[str, bytes]:
    base = f"{DS}/{identifier}/"
    files = {base + "plans.json": json.dumps(plans).encode(), base + "dataset.json": b'{"labels": {}}',
             base + "dataset_fingerprint.json": b"{}"}
    for f in folds:
        files[f"{base}fold_{f}/checkpoint_final.pth"] = weights + str(f).encode()
        files[f"{base}fold_{f}/progress.png"] = b"png"
    return files


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


@pytest.fixture
def one_model(tmp_path) -> Path:
    return write_zip(tmp_path / "model.zip", {**model_files("nnUNetTrainerFocalDice__nnUNetPlans__2d"),
                                              f"{DS}/inference_information.json": b"{}"})


# ---- inspection -----------------------------------------------------------------------------------

def test_inspect_lists_the_model_and_its_checkpoints(one_model):
    mz = inspect_zip(one_model)
    (m,) = mz.models
    assert (m.dataset, m.trainer, m.plans_name, m.configuration) == (DS, "nnUNetTrainerFocalDice", "nnUNetPlans", "2d")
    assert m.checkpoints == ("fold_0/checkpoint_final.pth",)
    assert m.label == f"{DS}/nnUNetTrainerFocalDice__nnUNetPlans__2d (folds 0)"


@pytest.mark.parametrize("content, message", [
    (b"this is not a zip", "not a readable zip file"),
    (None, "not an nnU-Net model zip"),  # a valid zip of something else
])
def test_non_zip_and_foreign_zip_are_refused_naming_the_file(tmp_path, content, message):
    path = tmp_path / "x.zip"
    if content is None:
        write_zip(path, {"notes/readme.txt": b"hello"})
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as err:
        inspect_zip(path)
    assert str(path) in str(err.value)


def test_truncated_and_corrupt_zips_are_refused(one_model, tmp_path):
    data = one_model.read_bytes()
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.zip: not a readable zip"):
        inspect_zip(truncated)
    # flip one byte inside a stored member: the directory is intact, the CRC is not
    stored = tmp_path / "stored.zip"
    with zipfile.ZipFile(stored, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{DS}/T__P__2d/fold_0/checkpoint_final.pth", b"A" * 1000)
    raw = bytearray(stored.read_bytes())
    raw[raw.index(b"A" * 1000) + 500] = ord("B")
    stored.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="stored.zip: corrupt zip, entry .*checkpoint_final.pth fails its CRC"):
        inspect_zip(stored)


@pytest.mark.parametrize("name, message", [
    (f"{DS}/../../evil.txt", "unsafe entry name"),
    ("/etc/evil.txt", "unsafe entry name"),
    ("loose_file.json", "not inside a DatasetNNN_Name/ folder"),
])
def test_unsafe_or_stray_entries_are_refused(tmp_path, name, message):
    path = write_zip(tmp_path / "m.zip", {**model_files("T__P__2d"), name: b"x"})
    with pytest.raises(ValueError, match=message):
        inspect_zip(path)


def test_model_folder_without_checkpoint_or_plans_is_refused(tmp_path):
    files = {n: d for n, d in model_files("T__P__2d").items() if not n.endswith(".pth")}
    with pytest.raises(ValueError, match=r"T__P__2d/ has no fold_\*/checkpoint\*.pth"):
        inspect_zip(write_zip(tmp_path / "a.zip", files))
    files = {n: d for n, d in model_files("T__P__2d").items() if not n.endswith("plans.json")}
    with pytest.raises(ValueError, match="has no plans.json"):
        inspect_zip(write_zip(tmp_path / "b.zip", files))


def test_training_version_is_read_from_debug_json(tmp_path):
    files = model_files("T__P__2d", folds=(0, 1))
    files[f"{DS}/T__P__2d/fold_0/debug.json"] = b"not json"
    files[f"{DS}/T__P__2d/fold_1/debug.json"] = json.dumps({"nnunet_iph_version": "0.0.9", "fold": "1"}).encode()
    (m,) = inspect_zip(write_zip(tmp_path / "m.zip", files)).models
    assert m.trained_with == "0.0.9"
    (m,) = inspect_zip(write_zip(tmp_path / "n.zip", model_files("T__P__2d"))).models
    assert m.trained_with is None


# ---- installing -----------------------------------------------------------------------------------

def test_install_then_reuse_then_refuse_a_different_model(one_model, tmp_path):
    results = tmp_path / "results"
    mz = inspect_zip(one_model)
    assert list(install(mz, results).values()) == ["installed"]
    folder = results / DS / "nnUNetTrainerFocalDice__nnUNetPlans__2d"
    assert (folder / "fold_0" / "checkpoint_final.pth").read_bytes() == b"weights-A0"
    assert (results / DS / "inference_information.json").is_file()
    assert sorted(p.name for p in (results / DS).iterdir()) == ["inference_information.json", folder.name]
    assert list(install(mz, results).values()) == ["already installed"]

    other = inspect_zip(write_zip(tmp_path / "other.zip",
                                  model_files("nnUNetTrainerFocalDice__nnUNetPlans__2d", b"weights-B")))
    with pytest.raises(ValueError, match=r"(?s)other.zip: a different model .*checkpoint_final.pth differs.*"
                                         r"--replace-model") as err:
        install(other, results)
    assert "\n" in str(err.value)
    assert (folder / "fold_0" / "checkpoint_final.pth").read_bytes() == b"weights-A0"  # untouched
    assert list(install(other, results, replace=True).values()) == ["replaced"]
    assert (folder / "fold_0" / "checkpoint_final.pth").read_bytes() == b"weights-B0"
    assert sorted(p.name for p in (results / DS).iterdir()) == ["inference_information.json", folder.name]


def test_installed_model_with_extra_folds_is_not_the_same_model(tmp_path):
    """Prediction uses every fold of the folder: the zip's fold 0 next to a local fold 1 is another model."""
    results = tmp_path / "results"
    install(inspect_zip(write_zip(tmp_path / "two.zip", model_files("T__P__2d", folds=(0, 1)))), results)
    (results / DS / "T__P__2d" / "fold_0" / "checkpoint_best.pth").write_bytes(b"local")  # not predicted with
    one = inspect_zip(write_zip(tmp_path / "one.zip", model_files("T__P__2d", folds=(0,))))
    with pytest.raises(ValueError, match=r"also holds fold_1/checkpoint_final.pth"):
        install(one, results)
    install(one, results, replace=True)
    assert not (results / DS / "T__P__2d" / "fold_1").exists()


def test_failed_extraction_leaves_no_half_model(one_model, tmp_path, monkeypatch):
    calls = []

    def failing(zf, info, dest):
        calls.append(info.filename)
        if len(calls) == 2:
            raise OSError("No space left on device")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(zf.read(info))

    monkeypatch.setattr(model_zip, "_extract", failing)
    results = tmp_path / "results"
    with pytest.raises(OSError):
        install(inspect_zip(one_model), results)
    assert list((results / DS).iterdir()) == []


# ---- choosing -------------------------------------------------------------------------------------

@pytest.fixture
def several(tmp_path):
    files = {**model_files("A__nnUNetPlans__2d"), **model_files("A__nnUNetPlans__3d_fullres"),
             **model_files("B__nnUNetPlans__2d")}
    return inspect_zip(write_zip(tmp_path / "several.zip", files)).models


def test_several_models_need_a_choice_listing_them(several):
    with pytest.raises(ValueError, match=r"several models: .*A__nnUNetPlans__2d .*A__nnUNetPlans__3d_fullres .*"
                                         r"B__nnUNetPlans__2d .*choose one with -tr"):
        choose_models(several, "single")
    with pytest.raises(ValueError, match="several models"):
        choose_models(several, "single", trainer="A")
    assert [m.identifier for m in choose_models(several, "single", "A", None, "3d_fullres")] == \
        ["A__nnUNetPlans__3d_fullres"]
    assert [m.identifier for m in choose_models(several, "single", "B")] == ["B__nnUNetPlans__2d"]
    assert len(choose_models(several, "ensemble", configuration="2d")) == 2
    with pytest.raises(ValueError, match=r"no model of the zip\(s\) matches -tr C -c 2d; they hold: "):
        choose_models(several, "single", "C", None, "2d")


def test_one_model_is_taken_but_a_contradicting_choice_is_refused(one_model):
    models = inspect_zip(one_model).models
    assert choose_models(models, "single") == list(models)
    with pytest.raises(ValueError, match="matches -c 3d_fullres"):
        choose_models(models, "single", configuration="3d_fullres")


def test_cascade_takes_the_fine_stage_and_planes_take_the_plane_plans(tmp_path):
    files = {**model_files("C__nnUNetPlans_cascade__2d_coarse", plans=CASCADE_PLANS),
             **model_files("C__nnUNetPlans_cascade__3d_fine", plans=CASCADE_PLANS)}
    models = inspect_zip(write_zip(tmp_path / "cascade.zip", files)).models
    assert [m.configuration for m in choose_models(models, "cascade")] == ["3d_fine"]  # previous_stage inherited
    with pytest.raises(ValueError, match="no cascade fine stage"):
        choose_models(models, "cascade", configuration="2d_coarse")
    planes = model_files("P__other__2d")
    for plane in ("axial", "coronal", "sagittal"):
        planes.update(model_files(f"P__nnUNetPlans_{plane}__2d"))
    models = inspect_zip(write_zip(tmp_path / "planes.zip", planes)).models
    assert sorted(m.plans_name for m in choose_models(models, "planes", plans="nnUNetPlans")) == \
        ["nnUNetPlans_axial", "nnUNetPlans_coronal", "nnUNetPlans_sagittal"]


def test_models_from_zips_installs_into_nnunet_results_and_warns_on_another_version(tmp_path, monkeypatch,
                                                                                      capsys):
    results = tmp_path / "results"
    monkeypatch.setenv("nnUNet_results", str(results))
    monkeypatch.setattr(model_zip, "check_trainer_available", lambda m: None)  # imports torch: a slow test below
    identifier = "nnUNetTrainerFocalDice_1ep_2it__nnUNetPlans__2d"
    files = model_files(identifier)
    files[f"{DS}/{identifier}/fold_0/debug.json"] = json.dumps({"nnunet_iph_version": "0.0.9"}).encode()
    path = write_zip(tmp_path / "m.zip", files)
    assert model_zip.models_from_zips([path], "single") == [results / DS / identifier]
    out, err = capsys.readouterr()
    assert out == f"{DS}/{identifier}: installed in {results} (from {path})\n"
    assert f"trained with nnunet-iph 0.0.9, this is {model_zip.__version__}" in err
    copy = write_zip(tmp_path / "copy.zip", files)
    with pytest.raises(ValueError, match=f"{identifier} is in both .*m.zip and .*copy.zip"):
        model_zip.models_from_zips([path, copy], "ensemble")


@pytest.mark.slow  # nnU-Net imports all its trainers to search (~20 s on a busy 2-core machine)
def test_unknown_trainer_is_refused_before_installing(tmp_path):
    path = write_zip(tmp_path / "m.zip", model_files("nnUNetTrainerNotInstalledAnywhere__nnUNetPlans__2d"))
    (m,) = inspect_zip(path).models
    with pytest.raises(ValueError, match="trainer 'nnUNetTrainerNotInstalledAnywhere' .* holds weights, not code"):
        model_zip.check_trainer_available(m)


# ---- through the CLI ------------------------------------------------------------------------------

def test_predict_cli_names_a_bad_zip_without_traceback(tmp_path):
    bad = tmp_path / "downloaded.zip"
    bad.write_bytes(b"<html>404</html>")
    proc = run_cli("nnunet-iph", "predict", "--model", str(bad), "-i", str(tmp_path), "-o", str(tmp_path / "o"),
                   check=False, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"nnunet-iph predict: error: {bad}: not a readable zip file (File is not a zip file)"
    proc = run_cli("nnunet-iph", "predict", "--model", str(bad), "-m", "X__Y__2d", "-d", "1", "-i", str(tmp_path),
                   "-o", str(tmp_path / "o"), check=False, timeout=300)
    assert proc.returncode == 2 and "give --model ZIP or -m MODEL, not both" in proc.stderr
    two = write_zip(tmp_path / "two.zip", {**model_files("A__nnUNetPlans__2d"), **model_files("B__nnUNetPlans__2d")})
    proc = run_cli("nnunet-iph", "predict", "--model", str(two), "-i", str(tmp_path), "-o", str(tmp_path / "o"),
                   check=False, timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("nnunet-iph predict: error: the zip(s) hold several models: "
                                                           f"{DS}/A__nnUNetPlans__2d (folds 0), {DS}/B__nnUNetPlans__2d")
    assert not (tmp_path / "o").exists() and not list(Path(os.environ["nnUNet_results"]).glob(f"{DS}*"))


# ---- end to end: train, export, install elsewhere, predict with both commands ---------------------

def _arrays(folder: Path) -> dict[str, tuple]:
    import numpy as np
    import SimpleITK as sitk

    return {p.name[:-len(".nii.gz")]: (sitk.GetArrayFromImage(sitk.ReadImage(str(p))),
                                       np.load(p.with_name(p.name.replace(".nii.gz", ".npz")))["probabilities"])
            for p in sorted(folder.glob("*.nii.gz"))}


@pytest.mark.slow
def test_exported_model_predicts_the_same_after_install_in_a_fresh_results_folder(phantom_dataset, tmp_path):
    import numpy as np

    from nnunet_iph.environment import nnunet_env

    trainer = "nnUNetTrainerFocalDice_1ep_2it_noTTA"
    identifier = f"{trainer}__nnUNetPlans__2d"
    ds = str(phantom_dataset.dataset_id)
    run_cli("nnUNetv2_train", ds, "2d", "0", "-tr", trainer, "-device", "cpu")
    note = phantom_dataset.results / identifier / "nnunet_iph_model.json"
    note.write_text('{"nnunet_iph": "0.1.0"}')  # a note of ours beside the model: the exporter drops it
    archive = tmp_path / "model.zip"
    run_cli("nnUNetv2_export_model_to_zip", "-d", ds, "-o", str(archive), "-c", "2d", "-tr", trainer, "-f", "0")
    prefix = f"{phantom_dataset.folder_name}/{identifier}/"
    with zipfile.ZipFile(archive) as zf:  # what nnU-Net's exporter carries (no trainer code)
        assert sorted(zf.namelist()) == sorted(prefix + n for n in (
            "dataset.json", "dataset_fingerprint.json", "plans.json", "fold_0/checkpoint_final.pth",
            "fold_0/debug.json", "fold_0/progress.png", "fold_0/validation/summary.json"))
        from nnunet_iph import __version__  # ... but the trainer's attributes in debug.json say which version
        assert json.loads(zf.read(prefix + "fold_0/debug.json"))["nnunet_iph_version"] == __version__

    images = str(phantom_dataset.raw / "imagesTs")
    plain = ["-d", ds, "-c", "2d", "-f", "0", "-tr", trainer, "-device", "cpu", "-npp", "0", "-nps", "0",
             "--save_probabilities"]
    run_cli("nnUNetv2_predict", "-i", images, "-o", str(tmp_path / "original"), *plain)

    # elsewhere: no raw or preprocessed data, an empty nnUNet_results, our package as `nnunet-iph env` sets it
    fresh = tmp_path / "elsewhere" / "nnUNet_results"
    fresh.mkdir(parents=True)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}, **nnunet_env(),
           "nnUNet_results": str(fresh), "nnUNet_n_proc_DA": "2", "nnUNet_def_n_proc": "2", "nnUNet_compile": "f"}
    run_cli("nnUNetv2_install_pretrained_model_from_zip", str(archive), env=env, cwd="/")
    run_cli("nnUNetv2_predict", "-i", images, "-o", str(tmp_path / "plain"), *plain, env=env, cwd="/")
    del env["nnUNet_extTrainer"]  # nnunet-iph sets it itself
    # nnUNetv2_predict runs torch on cpu_count() threads, nnunet-iph on the caller's: same threads, same float sums
    env["OMP_NUM_THREADS"] = str(os.cpu_count())
    proc = run_cli("nnunet-iph", "predict", "--model", str(archive), "-i", images, "-o", str(tmp_path / "iph"),
                   "--device", "cpu", "--save-probabilities", env=env, cwd="/")
    assert f"{phantom_dataset.folder_name}/{identifier}: already installed in {fresh}" in proc.stdout

    original = _arrays(tmp_path / "original")
    assert sorted(original) == sorted(p.name[:-len("_0000.nii.gz")] for p in Path(images).iterdir())
    for other in ("plain", "iph"):
        got = _arrays(tmp_path / other)
        assert sorted(got) == sorted(original)
        for case, (mask, probs) in original.items():
            assert np.array_equal(got[case][0], mask), (other, case)
            assert np.array_equal(got[case][1], probs), (other, case)
    assert any(0 < m.sum() < m.size for m, _ in original.values())  # not a constant mask
