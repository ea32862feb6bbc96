"""Common conversion engine: source subjects -> nnU-Net raw dataset, checked, lossless, restartable.

Every converter (multi-site manifest, INSTANCE, PhysioNet CT-ICH, MISTIE-style) builds a list of
:class:`~.listing.Subject` and calls :func:`run_conversion`, which

* locks the dataset folder (:mod:`nnunet_iph.locking`: one conversion per dataset at a time) and refuses to
  replace a dataset converted from another source unless ``overwrite``;
* checks the listing (:mod:`.listing`: duplicate ids, split values, missing masks, age/sex) and then
  every case in worker processes (:mod:`.case`), on the very bytes that are then written;
* writes each case into a hidden staging folder and moves it into ``imagesTr``/``labelsTr``
  (``imagesTs``/``labelsTs``) label first, image last, so nnU-Net never sees half a case;
* copies NIfTI sources byte for byte (gzip-compressing ``.nii``) when nothing needs changing,
  which keeps every header field (including sheared sforms of gantry-tilted scans) and is faster
  than a SimpleITK round trip; other formats are written by SimpleITK with their pixel type;
* remembers what it converted (:mod:`.records`): a re-run skips unchanged cases, finishes an
  interrupted run, and removes outputs of cases that are gone;
* writes ``cases.csv``, ``conversion_report.csv``, the splits, and ``dataset.json`` last
  (``dataset.json`` is removed while a run changes the folder: no ``dataset.json`` = incomplete).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from nnunet_iph.dataset_conversion.case import FILE_ENDING, CaseTask, ConversionOptions, convert_case, init_worker
from nnunet_iph.dataset_conversion.listing import Entry, Subject, plan
from nnunet_iph.dataset_conversion.records import (BRAIN_MASK_DIR, META_DIR, Committer, case_record, fingerprint,
                                                   finish, load_unchanged, output_paths, recorded_source)
from nnunet_iph.locking import folder_lock
from nnunet_iph.parallel import run_jobs

__all__ = ["ConversionOptions", "Subject", "run_conversion", "dataset_folder_name"]

OUTPUT_DIRS = ("imagesTr", "labelsTr", "imagesTs", "labelsTs", BRAIN_MASK_DIR)
SPLIT_SCHEMES = ("kfold", "loso")


def dataset_folder_name(dataset_id: int, name: str) -> str:
    return f"Dataset{dataset_id:03d}_{name}"


def _validate_target(dataset_id: int, name: str) -> None:
    if not isinstance(dataset_id, int) or isinstance(dataset_id, bool) or not 1 <= dataset_id <= 999:
        raise ValueError(f"dataset id must be an integer in 1..999, got {dataset_id!r}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name or ""):
        raise ValueError(f"dataset name {name!r}: use letters, digits, '-' and '_' only")


def _resolve_raw_root(raw_root: str | os.PathLike | None) -> Path:
    root = raw_root if raw_root is not None else os.environ.get("nnUNet_raw")
    if not root:
        raise ValueError("no output folder: pass raw_root (--raw-root) or set nnUNet_raw")
    return Path(root).expanduser().resolve()


def _not_writable(path: Path, err: OSError) -> ValueError:
    return ValueError(f"{path}: cannot write there ({err.strerror or err}); check the permissions of the "
                      f"output folder (--raw-root / $nnUNet_raw)")


def _check_target(raw: Path, ds: Path, dataset_id: int, overwrite: bool) -> None:
    if raw.is_dir():
        clash = [p.name for p in raw.glob(f"Dataset{dataset_id:03d}_*") if p.is_dir() and p != ds]
        if clash:
            raise ValueError(f"{raw}: dataset id {dataset_id} is already used by {', '.join(sorted(clash))}; "
                             f"nnU-Net needs unique ids (pick another --dataset-id or remove it)")
    if ds.exists() and not (ds / META_DIR).is_dir() and any(ds.iterdir()) and not overwrite:
        raise ValueError(f"{ds}: exists and was not written by nnunet-iph convert; remove it or pass "
                         f"--overwrite")


def _check_source(ds: Path, source: dict[str, str], overwrite: bool) -> None:
    """Converting another source into an existing dataset would silently replace its cases."""
    prev = recorded_source(ds)
    if prev is not None and prev != source and not overwrite:
        raise ValueError(f"{ds}: holds the {prev['converter']} conversion of {prev['source']}; refusing to "
                         f"replace its cases with the {source['converter']} conversion of {source['source']} "
                         f"(pass --overwrite to replace it, or choose another --dataset-id/--name)")


def _prepare_folder(ds: Path) -> Path:
    """Clean what a killed run left (staging, temporaries) and make sure every folder we write is writable."""
    staging = ds / META_DIR / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    (ds / META_DIR / "cases").mkdir(exist_ok=True)
    outputs = [ds / s for s in OUTPUT_DIRS if (ds / s).is_dir()]
    for d in (ds, ds / META_DIR, ds / META_DIR / "cases", staging, *outputs):
        try:
            with tempfile.TemporaryFile(dir=d):
                pass
        except OSError as err:
            raise _not_writable(d, err) from None
    for d in outputs:
        for p in d.iterdir():  # temporary files of a killed atomic write
            if p.name.startswith(".") and ".tmp" in p.name:
                p.unlink(missing_ok=True)
    return staging


@contextlib.contextmanager
def _output_errors(ds: Path):
    """Writing the dataset failed (not writable, disk full): one clear message instead of a traceback."""
    try:
        yield
    except OSError as err:
        raise _not_writable(Path(err.filename) if err.filename else ds, err) from None


def run_conversion(subjects: Iterable[Subject], *, dataset_id: int, name: str,
                   raw_root: str | os.PathLike | None, converter: str, source: str | os.PathLike,
                   options: ConversionOptions | None = None, test_fraction: float = 0.0, seed: int = 0,
                   num_workers: int = 1, strict: bool = False, num_folds: int = 5,
                   split_scheme: str = "kfold", overwrite: bool = False, progress: bool = True,
                   description: str = "", reference: str = "", licence: str = "",
                   extra_options: dict[str, Any] | None = None) -> Path:
    """Convert ``subjects`` into ``raw_root/DatasetNNN_Name``; see the module docstring."""
    opts = options or ConversionOptions()
    opts.validate()
    _validate_target(dataset_id, name)
    if split_scheme not in SPLIT_SCHEMES:
        raise ValueError(f"split_scheme {split_scheme!r}: choose from {SPLIT_SCHEMES}")
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    if num_folds < 2:
        raise ValueError(f"num_folds must be >= 2, got {num_folds}")
    subjects = list(subjects)
    if not subjects:
        raise ValueError(f"{source}: lists no subjects")
    raw = _resolve_raw_root(raw_root)
    entries = plan(subjects, test_fraction, seed)
    ds = raw / dataset_folder_name(dataset_id, name)
    _check_target(raw, ds, dataset_id, overwrite)
    created = not ds.exists()
    source_id = {"converter": converter, "source": str(Path(source).resolve())}
    with _output_errors(ds):
        (ds / META_DIR).mkdir(parents=True, exist_ok=True)
        with folder_lock(ds, ds / META_DIR / "lock", "another conversion", "dataset"):
            _check_source(ds, source_id, overwrite)
            staging = _prepare_folder(ds)
            committer = Committer(ds, source_id)
            try:
                n_unchanged = _convert_cases(ds, staging, entries, opts, committer, num_workers, strict, progress,
                                             name)
            except ValueError:
                if created:  # strict failure: leave no trace of this run
                    shutil.rmtree(ds, ignore_errors=True)
                raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            _remove_stale(ds, entries, committer)
            return finish(ds, entries, opts, converter=converter, source=source, name=name,
                          test_fraction=test_fraction, seed=seed, num_folds=num_folds, split_scheme=split_scheme,
                          strict=strict, n_unchanged=n_unchanged, description=description, reference=reference,
                          licence=licence, extra_options=extra_options or {}, committer=committer)


def _convert_cases(ds: Path, staging: Path, entries: list[Entry], opts: ConversionOptions, committer: Committer,
                   num_workers: int, strict: bool, progress: bool, name: str) -> int:
    """Convert what changed (returns the number of unchanged cases). Without ``strict`` each case is
    committed as it finishes; with it every case is checked first and only then all are committed."""
    todo: dict[str, tuple[Entry, dict[str, Any]]] = {}
    tasks: list[CaseTask] = []
    n_unchanged = 0
    for e in entries:
        if e.fate:
            continue
        e.outputs = output_paths(e, opts)
        fp = fingerprint(e, opts)
        rec = load_unchanged(ds, e, fp)
        if rec is not None:
            e.fate, e.record = "converted", rec
            e.notes.extend(rec.get("notes", []))
            e.warnings.extend(rec.get("warnings", []))
            n_unchanged += 1
            continue
        tasks.append(CaseTask(case_id=e.case_id, image=str(e.subject.image), mask=e.subject.mask or None,
                              staged_image=str(staging / f"{e.case_id}.image{FILE_ENDING}"),
                              staged_label=(str(staging / f"{e.case_id}.label{FILE_ENDING}")
                                            if e.subject.mask else None),
                              options=opts, expected_slices=e.subject.expected_slices,
                              expected_num_slices=e.subject.expected_num_slices,
                              staged_channels=tuple(str(staging / f"{e.case_id}.{role}{FILE_ENDING}")
                                                    for role in e.outputs if role.startswith("image_")),
                              staged_brain=(str(staging / f"{e.case_id}.brain{FILE_ENDING}")
                                            if "brain_mask" in e.outputs else None)))
        todo[e.case_id] = (e, fp)

    pending: list[tuple[Entry, CaseTask, dict[str, Any]]] = []
    jobs = run_jobs(convert_case, tasks, num_workers, desc=f"convert {name}", progress=progress and bool(tasks),
                    ordered=False, initializer=init_worker)
    with contextlib.closing(jobs):  # Ctrl-C in this loop: stop the pool before staging is removed
        for task, res in _quiet_workers(jobs, num_workers > 1 and len(tasks) > 1):
            e, fp = todo[task.case_id]
            if res.get("fatal"):
                raise ValueError(f"{res['reason']}; conversion stopped (re-run to finish it)")
            if not res["ok"]:
                e.skip(res["reason"])
                continue
            e.fate, e.record = "converted", case_record(res)
            e.notes.extend(res.get("notes", []))
            e.warnings.extend(res.get("warnings", []))
            if strict:
                pending.append((e, task, fp))
            else:
                committer.commit(e, _staged(task), fp, e.record)
    if strict:
        bad = [e for e in entries if e.fate == "skipped"]
        if bad:
            raise ValueError(_strict_message(bad, len(entries)))
        for e, task, fp in pending:  # everything checked: now move it all into place
            committer.commit(e, _staged(task), fp, e.record)
    return n_unchanged


def _quiet_workers(jobs: Iterator[Any], parallel: bool) -> Iterator[Any]:
    """Ctrl-C reaches every process of the terminal; only this one should report it. The pool spawns
    its workers in the first ``next()``: with SIGINT blocked there, they start with it blocked (the
    mask is inherited), so a worker still importing cannot die with a KeyboardInterrupt traceback;
    a Ctrl-C meanwhile stays pending and is delivered here right after. multiprocessing's resource
    tracker unblocks SIGINT when it starts, so it is started first."""
    if parallel:
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            first = next(jobs, None)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        if first is None:
            return
        yield first
    yield from jobs


def _staged(task: CaseTask) -> dict[str, str]:
    out = {"image": task.staged_image}
    out.update((f"image_{c:04d}", p) for c, p in enumerate(task.staged_channels, 1))
    if task.staged_label:
        out["label"] = task.staged_label
    if task.staged_brain:
        out["brain_mask"] = task.staged_brain
    return out


def _strict_message(bad: list[Entry], total: int) -> str:
    lines = [f"strict: {len(bad)} of {total} subject(s) cannot be converted (nothing was written):"]
    lines += [f"  {e.subject.subject_id}: {e.reason}" for e in bad]
    return "\n".join(lines)


def _remove_stale(ds: Path, entries: list[Entry], committer: Committer) -> None:
    """Outputs of cases that are no longer converted (removed, now skipped, moved train<->test)."""
    keep = {rel for e in entries if e.fate == "converted" for rel in e.outputs.values()}
    for sub in OUTPUT_DIRS:
        d = ds / sub
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            if f"{sub}/{p.name}" not in keep and p.is_file():
                committer.invalidate()
                p.unlink()
    live = {e.case_id for e in entries if e.fate == "converted"}
    for p in (ds / META_DIR / "cases").glob("*.json"):
        if p.stem not in live:
            p.unlink()
