"""``nnunet-iph volumes MASKS -o volumes.csv``: volumes, ABC/2, QC pictures and index.html of any mask folder."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from nnunet_iph.commands.evaluate import default_workers

    p = sub.add_parser(
        "volumes", help="hemorrhage volume, lesions and ABC/2 of a folder of masks (+ QC pictures, patients.csv)",
        description="One row per mask (reference or predicted) with the columns of predict's volumes.csv: "
                    "hemorrhage mL, 26-connected lesions, largest lesion mL, ABC/2 of the largest lesion with "
                    "A, B, C in mm (Kothari 1996). With --images also OUT/qc/<case>.png; always "
                    "OUT/index.html (OUT: the folder of -o, or --report-dir). A prediction folder's "
                    "pipeline.json and dataset.json fill the model, pipeline and per-label columns.")
    p.add_argument("masks", metavar="MASKS", help="folder of label images (CASE.nii.gz, .nrrd, .mha ...)")
    p.add_argument("-o", "--output", required=True, help="the CSV to write (e.g. volumes.csv)")
    p.add_argument("--images", metavar="DIR", help="folder of the CTs (CASE_0000.nii.gz or CASE.nii.gz) for the "
                                                   "QC pictures")
    p.add_argument("--qc", action=argparse.BooleanOptionalAction, default=None,
                   help="draw QC pictures (default: when --images is given)")
    p.add_argument("--patients", metavar="MAP.csv", help="CSV case,patient,time|order -> patients.csv (volume "
                                                         "trajectory, expansion >= 6 mL or >= 33 %%)")
    p.add_argument("--brain-masks", metavar="DIR", help="brain / intracranial masks (same names) -> intracranial_ml")
    p.add_argument("--report-dir", metavar="DIR", help="folder for qc/, index.html, patients.csv (default: the "
                                                       "folder of -o)")
    p.add_argument("--file-ending", help="mask file ending (default: any nnU-Net ending)")
    p.add_argument("--model", help="text for the model column (default: from MASKS/pipeline.json, else empty)")
    p.add_argument("--pipeline", help="text for the pipeline column (default: from MASKS/pipeline.json, else empty)")
    p.add_argument("--num-workers", type=int, default=default_workers())
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")
    p.set_defaults(func=run)


def _prediction_info(folder: Path) -> tuple[dict[str, str], dict | None]:
    """Provenance from predict's pipeline.json, labels from dataset.json (both optional)."""
    pipeline, dataset = (_read_json(folder / name) for name in ("pipeline.json", "dataset.json"))
    info = {"pipeline": str(pipeline.get("pipeline", "")),
            "model": "; ".join(Path(m).name for m in pipeline.get("models", []))} if pipeline else {}
    return info, dataset.get("labels")


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def _ct_files(images: Path, cases: list[str]) -> dict[str, str]:
    from nnunet_iph.analysis.evaluate import find_cases

    found = find_cases(images)
    out, missing = {}, []
    for case in cases:
        path = found.get(f"{case}_0000") or found.get(case)
        if path is None:
            missing.append(case)
        else:
            out[case] = str(path)
    if missing:
        raise FileNotFoundError(f"--images {images}: no CT for case(s) {', '.join(missing[:5])}"
                                f"{' ...' if len(missing) > 5 else ''} (expected {missing[0]}_0000.nii.gz or "
                                f"{missing[0]}.nii.gz)")
    return out


def run(args: argparse.Namespace) -> int:
    from nnunet_iph.analysis.evaluate import find_cases
    from nnunet_iph.inference.outputs import CaseJob, write_outputs

    masks = Path(args.masks)
    found = find_cases(masks, args.file_ending)
    if not found:
        raise ValueError(f"{masks}: no label images ({args.file_ending or '.nii.gz, .nrrd, .mha, ...'})")
    qc = bool(args.images) if args.qc is None else args.qc
    if qc and not args.images:
        raise ValueError("--qc needs --images DIR (the CTs to draw the outlines on)")
    cts = _ct_files(Path(args.images), list(found)) if qc else {}
    brains = find_cases(args.brain_masks) if args.brain_masks else {}
    missing = [c for c in found if args.brain_masks and c not in brains]
    if missing:
        raise FileNotFoundError(f"--brain-masks {args.brain_masks}: no brain mask for case(s) {', '.join(missing[:5])}")
    info, labels = _prediction_info(masks)
    info.update({k: v for k, v in (("model", args.model), ("pipeline", args.pipeline)) if v is not None})
    jobs = [CaseJob(case, str(path), cts.get(case), str(brains[case]) if case in brains else None, labels)
            for case, path in found.items()]
    res = write_outputs(jobs, args.output, args.report_dir, provenance=info, patients=args.patients,
                        title=f"nnunet-iph volumes: {masks}", num_workers=args.num_workers, progress=not args.quiet)
    if res.unmapped_cases:
        print(f"note: {len(res.unmapped_cases)} case(s) are not in {args.patients} and have no trajectory: "
              f"{', '.join(res.unmapped_cases[:5])}", file=sys.stderr)
    if not args.quiet:
        extra = f", {res.patients_csv}" if res.patients_csv else ""
        print(f"{len(res.table)} case(s): {res.volumes_csv}, {res.index_html}{extra}"
              f" ({len(res.qc_pictures)} QC picture(s); {res.seconds_per_case:.2f} s/case)")
    return 0
