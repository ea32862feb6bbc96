"""``nnunet-iph convert {multisite,instance,physionet,mistie,install-splits}``: sources -> nnU-Net raw data."""

from __future__ import annotations

import argparse


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset-id", "-d", type=int, required=True, help="nnU-Net dataset id (1-999)")
    p.add_argument("--name", required=True, help="dataset name: the folder is DatasetNNN_NAME")
    p.add_argument("--raw-root", help="output root (default: $nnUNet_raw)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--strict", action="store_true", help="fail (writing nothing) instead of skipping bad inputs")
    p.add_argument("--reorient", metavar="CODE",
                   help="reorient image and mask to this orientation (DICOM convention, e.g. LPS or RAS)")
    p.add_argument("--resample-mask", action="store_true",
                   help="resample masks whose grid differs from the image beyond the tolerance "
                        "(nearest neighbour) instead of skipping the case")
    p.add_argument("--tolerance", type=float, default=1e-3,
                   help="image/mask geometry tolerance in mm and direction cosines (default 1e-3)")
    p.add_argument("--merge-labels", action="store_true", help="map every positive mask label to 1")
    p.add_argument("--dicom-irregular", choices=("error", "keep", "resample"), default="error",
                   help="DICOM series with gantry tilt or non-uniform slice spacing: skip with a reason "
                        "(error, default), convert as read (keep), or resample to a regular grid")
    p.add_argument("--folds", type=int, default=5, help="number of patient-level folds (default 5)")
    p.add_argument("--split-scheme", choices=("kfold", "loso"), default="kfold",
                   help="what splits_final.json holds: k folds stratified by site and size, or "
                        "leave-one-site-out (both are written as splits_kfold/splits_loso.json)")
    p.add_argument("--seed", type=int, default=0, help="seed of the test hold-out and folds")
    p.add_argument("--overwrite", action="store_true",
                   help="take over an existing dataset folder not written by nnunet-iph")
    p.add_argument("--install-splits", action="store_true",
                   help="also copy splits_final.json to $nnUNet_preprocessed/DatasetNNN_NAME/")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a data source into an nnU-Net raw dataset",
                       description="Convert a data source into nnUNet_raw/DatasetNNN_NAME with dataset.json, "
                                   "cases.csv, conversion_report.csv and splits_final.json.")
    srcs = p.add_subparsers(dest="source", required=True, metavar="SOURCE")

    m = srcs.add_parser("multisite", help="manifest CSV subject_id,image,mask,site,age,sex[,...]")
    m.add_argument("src", metavar="MANIFEST", help="manifest CSV (paths relative to it)")
    m.add_argument("--test-fraction", type=float, default=0.0,
                   help="hold out this share of patients, stratified by site (a split column overrides)")
    _common(m)
    m.set_defaults(func=run)

    i = srcs.add_parser("instance", help="INSTANCE 2022: data/NNN.nii.gz + label/NNN.nii.gz")
    i.add_argument("src", metavar="SRC", help="folder with data/ and label/ (or train/validation subfolders)")
    i.add_argument("--test-dir", action="append", default=[],
                   help="extra folder of unlabelled images (or with data/) for imagesTs; repeatable")
    _common(i)
    i.set_defaults(func=run)

    ph = srcs.add_parser("physionet", help="PhysioNet CT-ICH: ct_scans/, masks/, hemorrhage_diagnosis_raw_ct.csv")
    ph.add_argument("src", metavar="SRC", help="release folder")
    ph.add_argument("--cohort", choices=("all", "iph"), default="all",
                    help="all: every patient, any ICH = label 1 (default); iph: patients whose only "
                         "subtype is intraparenchymal")
    ph.add_argument("--iph-include-negatives", action="store_true",
                    help="with --cohort iph: also keep patients without any hemorrhage")
    ph.add_argument("--test-fraction", type=float, default=0.0, help="hold out this share of patients")
    _common(ph)
    ph.set_defaults(func=run)

    mi = srcs.add_parser("mistie", help="MISTIE-style trial CSV (phase II -> train, III -> test)")
    mi.add_argument("src", metavar="CSV", help="scan table: scan_id,patient_id,phase,site,scanner,age,sex,image,mask")
    _common(mi)
    mi.set_defaults(func=run)

    s = srcs.add_parser("install-splits",
                        help="copy a converted dataset's splits to nnUNet_preprocessed/DatasetNNN_NAME/splits_final.json")
    s.add_argument("--dataset-id", "-d", required=True, help="dataset id or folder name")
    s.add_argument("--scheme", choices=("final", "kfold", "loso"), default="final")
    s.add_argument("--raw-root", help="default: $nnUNet_raw")
    s.add_argument("--preprocessed-root", help="default: $nnUNet_preprocessed")
    s.set_defaults(func=run_install)


def run(args: argparse.Namespace) -> int:
    from nnunet_iph import dataset_conversion as dc

    common = dict(raw_root=args.raw_root, num_workers=args.workers, strict=args.strict, reorient=args.reorient,
                  num_folds=args.folds, split_scheme=args.split_scheme, resample_mask=args.resample_mask,
                  geometry_tolerance=args.tolerance, merge_labels=args.merge_labels,
                  dicom_irregular=args.dicom_irregular, seed=args.seed, overwrite=args.overwrite,
                  progress=not args.no_progress)
    if args.source == "multisite":
        ds = dc.convert_multisite(args.src, args.dataset_id, args.name, test_fraction=args.test_fraction, **common)
    elif args.source == "instance":
        ds = dc.convert_instance(args.src, args.dataset_id, args.name, test_dirs=args.test_dir, **common)
    elif args.source == "physionet":
        ds = dc.convert_physionet(args.src, args.dataset_id, args.name, cohort=args.cohort,
                                  iph_include_negatives=args.iph_include_negatives,
                                  test_fraction=args.test_fraction, **common)
    else:
        ds = dc.convert_mistie(args.src, args.dataset_id, args.name, **common)
    print(ds)
    if args.install_splits:
        print(dc.install_splits(ds))
    return 0


def run_install(args: argparse.Namespace) -> int:
    from nnunet_iph.dataset_conversion import install_splits

    print(install_splits(args.dataset_id, args.preprocessed_root, scheme=args.scheme, raw_root=args.raw_root))
    return 0
