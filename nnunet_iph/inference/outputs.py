"""Per-case outputs of a folder of masks: volumes.csv, qc/<case>.png, index.html, patients.csv.

:func:`write_prediction_outputs` is what ``nnunet-iph predict`` calls on its output folder;
:func:`write_outputs` is the general form behind ``nnunet-iph volumes`` (any folder of masks,
reference or predicted). Every case is read, checked, measured and drawn *before* anything is
written, and every file is written atomically: a bad mask stops the run with a message naming
the file and leaves the previous outputs as they were. A rerun replaces this run's files; a
``patients.csv`` of an earlier run with a map is removed when no map is given (it would no longer
match volumes.csv), and so are the QC pictures of this run's cases under ``--no-qc``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from nnunet_iph import __version__
from nnunet_iph.imageio import InputError, atomic_path, read_image, write_csv, write_text
from nnunet_iph.inference.volumes import PROVENANCE_COLUMNS, VOLUME_COLUMNS, read_label_map, same_grid, volume_row

QC_FOLDER = "qc"


@dataclass(frozen=True)
class CaseJob:
    """One mask and what goes with it (paths as strings: jobs travel to worker processes)."""

    case: str
    mask: str
    ct: str | None = None  # CT (first channel) for the QC picture; None: no picture
    brain_mask: str | None = None
    labels: Mapping[str, Any] | None = None


@dataclass
class Outputs:
    volumes_csv: Path
    index_html: Path
    table: pd.DataFrame
    qc_pictures: dict[str, Path] = field(default_factory=dict)
    patients_csv: Path | None = None
    unmapped_cases: list[str] = field(default_factory=list)
    seconds_per_case: float = 0.0


def qc_title(case: str, row: Mapping[str, Any]) -> str:
    text = f"{case}: hemorrhage {row['hemorrhage_ml']:.2f} mL, {row['n_lesions']} lesion(s)"
    if row["n_lesions"]:
        text += f"; largest {row['largest_lesion_ml']:.2f} mL, ABC/2 {row['abc2_ml']:.2f} mL"
    return text


def process_case(job: CaseJob) -> tuple[dict[str, Any], bytes | None]:
    """The volumes.csv row of one case and its QC picture (PNG bytes, or None without a CT)."""
    image, arr = read_label_map(job.mask)
    brain = (*read_label_map(job.brain_mask, "brain mask"), Path(job.brain_mask)) if job.brain_mask else None
    row = {"case": job.case, "mask": Path(job.mask).name,
           **volume_row(image, arr, job.labels, brain, f"mask {job.mask}")}
    if job.ct is None:
        return row, None
    import SimpleITK as sitk

    from nnunet_iph.inference.qc import render_qc

    ct = read_image(job.ct, "CT")
    problems = same_grid(image, ct)
    if ct.GetNumberOfComponentsPerPixel() != 1:
        problems.append(f"{ct.GetNumberOfComponentsPerPixel()} components per voxel")
    if problems:
        raise InputError(f"CT {job.ct}: not on the grid of its mask {job.mask}: " + "; ".join(problems))
    png = render_qc(sitk.GetArrayViewFromImage(ct), arr, image.GetSpacing(), image.GetDirection(),
                    qc_title(job.case, row), row["abc2_slice"])
    return row, png


def _table(rows: list[dict[str, Any]], provenance: Mapping[str, Any]) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=list(VOLUME_COLUMNS) + sorted({k for r in rows for k in r} -
                                                                     set(VOLUME_COLUMNS)))
    for col in PROVENANCE_COLUMNS:
        table[col] = provenance.get(col, "")
    table["abc2_slice"] = table["abc2_slice"].astype("Int64")
    return table


def write_outputs(jobs: Sequence[CaseJob], csv_path: str | os.PathLike, report_dir: str | os.PathLike | None = None,
                  *, provenance: Mapping[str, Any] | None = None, patients: str | os.PathLike | None = None,
                  title: str = "nnunet-iph volumes", num_workers: int = 1, progress: bool = False) -> Outputs:
    """Measure (and draw, for jobs with a CT) every case, then write the outputs.

    ``report_dir`` (default: the CSV's folder) receives ``qc/``, ``index.html`` and ``patients.csv``.
    ``patients``: a map CSV (:mod:`nnunet_iph.inference.patients`) -> ``patients.csv``.
    """
    from nnunet_iph.inference.html_index import index_html
    from nnunet_iph.inference.patients import patients_table, read_patient_map
    from nnunet_iph.parallel import run_jobs

    if not jobs:
        raise ValueError("no masks to measure")
    csv_path = Path(csv_path)
    report = Path(report_dir) if report_dir is not None else csv_path.parent
    patient_map = read_patient_map(patients) if patients is not None else None  # bad map: fail before the work
    t0 = time.perf_counter()
    # a spawned worker first imports SimpleITK, scipy and matplotlib (~2 s): only worth it for many cases
    workers = min(num_workers, max(1, len(jobs) // 8))
    results = list(run_jobs(process_case, jobs, workers, desc="volumes", progress=progress))
    seconds = (time.perf_counter() - t0) / len(jobs)
    table = _table([row for _, (row, _) in results],
                   {"nnunet_iph_version": __version__, **(provenance or {})})
    trajectories, unmapped = (patients_table(table, *patient_map, source=f"patient map {patients}")
                              if patient_map is not None else (None, []))

    pictures: dict[str, Path] = {}
    for job, (_, png) in results:
        target = report / QC_FOLDER / f"{job.case}.png"
        if png is not None:
            write_bytes(png, target)
            pictures[job.case] = target
        else:
            target.unlink(missing_ok=True)  # a picture of an earlier run would not match this row
    write_csv(table, csv_path)
    patients_csv = report / "patients.csv"
    if trajectories is not None:
        write_csv(trajectories, patients_csv)
    else:
        patients_csv.unlink(missing_ok=True)
    links = {"volumes.csv": _relative(csv_path, report)}
    if trajectories is not None:
        links["patients.csv"] = "patients.csv"
    page = index_html(table, {c: _relative(p, report) for c, p in pictures.items()}, links, title, trajectories)
    index = write_text(page, report / "index.html")
    return Outputs(csv_path, index, table, pictures, patients_csv if trajectories is not None else None,
                   unmapped, seconds)


def write_bytes(data: bytes, path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


def write_prediction_outputs(out: str | os.PathLike, cases: Mapping[str, Sequence[str]], file_ending: str,
                             labels: Mapping[str, Any] | None = None, *, pipeline: str = "",
                             models: Iterable[Any] = (), qc: bool = True, patients: str | os.PathLike | None = None,
                             brain_masks: str | os.PathLike | None = None, num_workers: int = 1,
                             progress: bool = False) -> Path:
    """volumes.csv, qc/, index.html (and patients.csv with a map) of a prediction folder; returns the CSV.

    ``cases``: case -> its CT channel files (the first is drawn); masks are ``out/<case><file_ending>``.
    ``brain_masks``: a folder of ``<case><file_ending>`` brain masks -> ``intracranial_ml``.
    """
    out = Path(out)
    model_names = "; ".join(getattr(m, "identifier", str(m)) for m in models)
    jobs = [CaseJob(case, str(out / f"{case}{file_ending}"), str(files[0]) if qc and files else None,
                    str(Path(brain_masks) / f"{case}{file_ending}") if brain_masks is not None else None,
                    dict(labels) if labels else None)
            for case, files in cases.items()]
    title = f"nnunet-iph {__version__}: {pipeline or 'prediction'}" + (f" ({model_names})" if model_names else "")
    return write_outputs(jobs, out / "volumes.csv", out, provenance={"model": model_names, "pipeline": pipeline},
                         patients=patients, title=title, num_workers=num_workers, progress=progress).volumes_csv
