"""Shared nnU-Net plumbing for planning, cascades and ensembles: names, folders, plans, preprocessing.

Set the nnU-Net environment (:func:`nnunet_iph.environment.apply_nnunet_env`) before calling
anything here; nnU-Net modules are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Iterable

PREPROCESSING_STAMP = "nnunet_iph_preprocessing.json"


def _env_dir(var: str) -> Path:
    value = os.environ.get(var)
    if not value:
        raise ValueError(f"environment variable {var} is not set; run `eval \"$(nnunet-iph env --workdir W)\"` "
                         "or nnunet_iph.environment.apply_nnunet_env(W) first")
    return Path(value)


def dataset_name(dataset: int | str) -> str:
    """``501`` / ``"501"`` / ``"Dataset501_X"`` -> ``"Dataset501_X"`` (clear error when unknown)."""
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    try:
        return maybe_convert_to_dataset_name(int(dataset) if str(dataset).isdigit() else dataset)
    except RuntimeError as err:
        raise ValueError(f"dataset {dataset!r} not found in nnUNet_raw/_preprocessed/_results: "
                         f"{str(err).splitlines()[0]}") from None


def dataset_id(dataset: int | str) -> int:
    return int(dataset_name(dataset)[len("Dataset"):len("Dataset") + 3])


def raw_dir(dataset: int | str) -> Path:
    return _env_dir("nnUNet_raw") / dataset_name(dataset)


def preprocessed_dir(dataset: int | str) -> Path:
    return _env_dir("nnUNet_preprocessed") / dataset_name(dataset)


def results_dir(dataset: int | str) -> Path:
    return _env_dir("nnUNet_results") / dataset_name(dataset)


def plans_path(dataset: int | str, plans_identifier: str) -> Path:
    return preprocessed_dir(dataset) / f"{plans_identifier}.json"


def load_plans(dataset: int | str, plans_identifier: str) -> dict:
    path = plans_path(dataset, plans_identifier)
    if not path.is_file():
        available = sorted(p.stem for p in path.parent.glob("*.json")
                           if p.stem not in ("dataset", "dataset_fingerprint", "splits_final"))
        raise FileNotFoundError(f"{path}: plans {plans_identifier!r} not found (available: {available}); "
                                "create them with `nnunet-iph plan`")
    return json.loads(path.read_text(encoding="utf-8"))


def save_plans(plans: dict, path: Path) -> Path:
    from nnunetv2.utilities.json_export import recursive_fix_for_json_export

    from nnunet_iph.imageio import write_json

    recursive_fix_for_json_export(plans)
    return write_json(plans, path)


def training_cases(dataset: int | str) -> dict[str, dict]:
    """``{case: {'images': [...], 'label': ...}}`` of the raw training set (nnU-Net's own listing)."""
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    folder = raw_dir(dataset)
    dataset_json = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    return get_filenames_of_train_images_and_targets(str(folder), dataset_json)


def ensure_fingerprint(dataset: int | str, num_processes: int, verify_integrity: bool = False) -> Path:
    """nnU-Net's dataset fingerprint (extracted once; ``verify_integrity`` as ``--verify_dataset_integrity``)."""
    path = preprocessed_dir(dataset) / "dataset_fingerprint.json"
    if not path.is_file():
        from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprint_dataset

        extract_fingerprint_dataset(dataset_id(dataset), num_processes=num_processes,
                                    check_dataset_integrity=verify_integrity, clean=True, verbose=False,
                                    show_progress_bar=False)
    return path


def ensure_default_plans(dataset: int | str, plans_identifier: str = "nnUNetPlans",
                         gpu_memory: float | None = None) -> Path:
    """nnU-Net's own plans (2d, 3d_fullres ...) under ``plans_identifier``, planned once (the cascade's source)."""
    path = plans_path(dataset, plans_identifier)
    if not path.is_file():
        from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiment_dataset

        with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net prints every configuration dict
            plan_experiment_dataset(dataset_id(dataset), overwrite_plans_name=plans_identifier,
                                    gpu_memory_target_in_gb=gpu_memory)
    return path


def _config_stamp(plans: dict, configuration: str) -> str:
    """Hash of everything that determines a configuration's preprocessed data."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    cfg = PlansManager(plans).get_configuration(configuration).configuration
    keys = ("data_identifier", "preprocessor_name", "spacing", "normalization_schemes", "use_mask_for_norm",
            "resampling_fn_data", "resampling_fn_data_kwargs", "resampling_fn_seg", "resampling_fn_seg_kwargs")
    relevant = {k: cfg.get(k) for k in keys}
    relevant["transpose_forward"] = plans["transpose_forward"]
    relevant["foreground_intensity_properties_per_channel"] = plans.get("foreground_intensity_properties_per_channel")
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def preprocessed_complete(folder: Path, cases: Iterable[str]) -> bool:
    return folder.is_dir() and all(
        (folder / f"{c}.pkl").is_file() and any((folder / f"{c}{e}").is_file() for e in (".b2nd", ".npz", ".npy"))
        for c in cases)


def preprocess_configurations(dataset: int | str, plans_identifier: str, configurations: Iterable[str],
                              num_processes: int = 2, force: bool = False) -> dict[str, str]:
    """Preprocess configurations unless their data is already there and matches the plans.

    Configurations of different plans files may share a data identifier (the cascade plans reuse
    ``nnUNetPlans_2d`` / ``_3d_fullres``); a stamp file records what the data was made from, so a
    re-plan with other spacing triggers preprocessing again. Returns ``{config: 'done'|'reused'}``.
    """
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_iph.imageio import write_json

    name = dataset_name(dataset)
    plans = load_plans(name, plans_identifier)
    pm = PlansManager(plans)
    cases = list(training_cases(name))
    stamp_file = preprocessed_dir(name) / PREPROCESSING_STAMP  # not inside the data folders: nnU-Net
    stamps = json.loads(stamp_file.read_text(encoding="utf-8")) if stamp_file.is_file() else {}  # infers their format from the files
    status = {}
    for configuration in dict.fromkeys(configurations):
        if configuration not in pm.available_configurations:
            raise ValueError(f"{plans_path(name, plans_identifier)}: no configuration {configuration!r} "
                             f"(available: {pm.available_configurations})")
        cm = pm.get_configuration(configuration)
        folder = preprocessed_dir(name) / cm.data_identifier
        stamp = _config_stamp(plans, configuration)
        old = stamps.get(cm.data_identifier)
        if not force and preprocessed_complete(folder, cases) and old in (None, stamp):
            status[configuration] = "reused"
            continue
        preprocessor = cm.preprocessor_class(verbose=False)
        preprocessor.show_progress_bar = False
        preprocessor.run(dataset_id(name), configuration, plans_identifier, num_processes=num_processes)
        stamps[cm.data_identifier] = stamp
        write_json(stamps, stamp_file)
        status[configuration] = "done"
    _copy_gt_segmentations(name)
    return status


def _copy_gt_segmentations(name: str) -> None:
    """What ``nnUNetv2_preprocess`` does after preprocessing: reference labels for validation."""
    dataset_json = json.loads((raw_dir(name) / "dataset.json").read_text(encoding="utf-8"))
    target = preprocessed_dir(name) / "gt_segmentations"
    target.mkdir(parents=True, exist_ok=True)
    for case, files in training_cases(name).items():
        dst = target / f"{case}{dataset_json['file_ending']}"
        src = Path(files["label"])
        if not dst.is_file() or dst.stat().st_mtime < src.stat().st_mtime:
            shutil.copy2(src, dst)


def write_splits(dataset: int | str, n_folds: int, seed: int = 12345, overwrite: bool = False) -> Path:
    """A k-fold ``splits_final.json`` (nnU-Net's own generator); fewer folds = faster experiments."""
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    from nnunet_iph.imageio import write_json

    path = preprocessed_dir(dataset) / "splits_final.json"
    if path.is_file() and not overwrite:
        existing = json.loads(path.read_text(encoding="utf-8"))
        if len(existing) != n_folds:
            raise ValueError(f"{path} already has {len(existing)} folds, not {n_folds}; pass overwrite=True "
                             "(models trained on the old folds then no longer match)")
        return path
    if n_folds < 2:
        raise ValueError(f"need at least 2 folds, got {n_folds}")
    cases = sorted(training_cases(dataset))
    if len(cases) < n_folds:
        raise ValueError(f"{len(cases)} training cases cannot make {n_folds} folds")
    return write_json(generate_crossval_split(cases, seed=seed, n_splits=n_folds), path)


def load_splits(dataset: int | str) -> list[dict]:
    path = preprocessed_dir(dataset) / "splits_final.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no splits yet (nnU-Net writes it when the first fold trains; "
                                "`nnunet-iph plan --folds K` writes one)")
    return json.loads(path.read_text(encoding="utf-8"))
