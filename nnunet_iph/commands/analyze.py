"""``nnunet-iph analyze``: nnU-Net results -> per-case table, statistics, tables, figures, report."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze", help="statistics, paper-style tables, figures and a report from nnU-Net results",
        description="Collect every validation (and given test) prediction folder under an nnU-Net results tree, "
                    "score it against the reference labels, join cases.csv and write tables/, figures/, "
                    "report.md, report.html, results.json and per_case.csv to OUT.")
    p.add_argument("results", nargs="?", help="nnUNet_results root, a DatasetXXX_Name folder or one "
                   "Trainer__Plans__config folder (optional with --metrics-csv / --predictions)")
    p.add_argument("--cases", help="cases.csv with case_id, site, age, sex, volume_ml, subtype flags "
                   "(default: $nnUNet_raw/<dataset>/cases.csv when it exists)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--metrics-csv", action="append", default=[], metavar="[NAME=]CSV",
                   help="analyse precomputed per-case metrics (nnunet-iph evaluate output or an earlier "
                        "per_case.csv) instead of scoring predictions; repeat for several models")
    p.add_argument("--predictions", action="append", default=[], metavar="NAME=DIR",
                   help="an extra prediction folder (test set by default; NAME = Trainer__Plans__config or any "
                        "model name); repeatable")
    p.add_argument("--predictions-split", choices=("test", "validation"), default="test",
                   help="split of the --predictions folders (default: test)")
    p.add_argument("-d", "--dataset", help="dataset id or name, when RESULTS is the nnUNet_results root")
    p.add_argument("--labels",
                   help="reference labels of the validation cases (default: $nnUNet_raw/<dataset>/labelsTr)")
    p.add_argument("--test-labels",
                   help="reference labels of test predictions (default: $nnUNet_raw/<dataset>/labelsTs)")
    p.add_argument("--folds", nargs="+", help="only these folds (default: all found)")
    p.add_argument("--no-ensembles", action="store_true", help="ignore <dataset>/ensembles/")
    p.add_argument("--metric-source", choices=("evaluate", "summary", "auto"), default="evaluate",
                   help="evaluate: our metrics vs the labels (default); summary: nnU-Net summary.json "
                        "(Dice/IoU/precision/recall only); auto: evaluate when labels are found")
    p.add_argument("--allow-missing", action="store_true",
                   help="analyse although some model lacks cases (paired tests then use the common cases)")
    p.add_argument("--metrics", nargs="+", help="metrics to analyse (default: those present of dice, iou, "
                   "precision, recall, hd95_mm, hd_mm, assd_mm, nsd_*, rvd)")
    p.add_argument("--nsd-tolerance-mm", type=float, help="NSD tolerance passed to the evaluator")
    p.add_argument("--surface", choices=("voxel", "surfel"), help="surface convention passed to the evaluator")
    p.add_argument("-j", "--num-workers", type=int, default=1, help="evaluator processes (default 1)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--failure-threshold", type=float, default=0.5, help="Dice below this is a failure (0.5)")
    p.add_argument("--volume-tolerance-ml", type=float, default=5.0, help="volume agreement tolerance (5 mL)")
    p.add_argument("--images",
                   help="CT images of validation cases for overlays (default: $nnUNet_raw/<dataset>/imagesTr)")
    p.add_argument("--test-images", help="CT images of test cases (default: $nnUNet_raw/<dataset>/imagesTs)")
    p.add_argument("--overlay-cases", nargs="+", help="cases to draw (default: best, median, worst of the best system)")
    p.add_argument("--n-overlays", type=int, default=3, help="automatic overlays per analysis (0 = none)")
    p.set_defaults(func=run)


def _default_cases(sources) -> Path | None:
    raw = os.environ.get("nnUNet_raw")
    for src in sources:
        if raw and src.dataset:
            cand = Path(raw) / src.dataset / "cases.csv"
            if cand.is_file():
                return cand
    return None


def run(args: argparse.Namespace) -> int:
    from nnunet_iph.analysis import collect as C
    from nnunet_iph.analysis.output_paths import check_output_dir, reporting_write_errors
    from nnunet_iph.analysis.report import AnalysisSettings, build_report

    if not args.results and not args.metrics_csv and not args.predictions:
        raise ValueError("give RESULTS, --metrics-csv or --predictions")
    if args.metrics_csv and (args.results or args.predictions):
        raise ValueError("--metrics-csv replaces scoring: give it without RESULTS / --predictions")
    if args.cases and not Path(args.cases).is_file():
        raise FileNotFoundError(f"cases file {args.cases} does not exist")
    out = check_output_dir(args.output, "output folder")  # before the scoring, which takes minutes
    if args.metrics_csv:
        collection = C.table_from_metrics_csvs(args.metrics_csv, args.cases, allow_missing=args.allow_missing)
        cases_path = args.cases
    else:
        sources = []
        if args.results:
            sources += C.discover_sources(args.results, args.dataset, args.folds, not args.no_ensembles)
        for spec in args.predictions:
            ref = args.test_labels if args.predictions_split == "test" else args.labels
            src = C.parse_source_spec(spec, args.predictions_split, ref)
            if src.dataset is None and sources:
                from dataclasses import replace

                src = replace(src, dataset=sources[0].dataset)
            sources.append(src)
        cases_path = args.cases or _default_cases(sources)
        evaluate_kwargs = {"nsd_tolerance_mm": args.nsd_tolerance_mm, "surface": args.surface,
                           "num_workers": args.num_workers}
        collection = C.collect(sources, cases_path, labels_dir=args.labels, test_labels_dir=args.test_labels,
                               metric_source=args.metric_source, allow_missing=args.allow_missing,
                               evaluate_kwargs=evaluate_kwargs)
    messages = list(collection.messages)
    if cases_path is None:
        messages.append("no cases.csv: site, age and sex are unknown, so those terms are dropped")
    settings = AnalysisSettings(metrics=args.metrics, seed=args.seed, n_boot=args.n_boot,
                                failure_threshold=args.failure_threshold,
                                volume_tolerance_ml=args.volume_tolerance_ml, overlay_cases=args.overlay_cases,
                                n_overlays=args.n_overlays, images_dir=args.images,
                                test_images_dir=args.test_images, messages=messages)
    with reporting_write_errors(f"the report in {out}"):  # e.g. a read-only tables/ left in OUT
        build_report(collection.table, out, settings)
    print(f"report: {out / 'report.md'} ({out / 'report.html'}); numbers: {out / 'results.json'}")
    return 0
