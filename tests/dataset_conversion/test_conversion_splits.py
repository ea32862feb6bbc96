"""Patient-level folds stratified by site and size, leave-one-site-out, hold-out, install into preprocessed."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from conversion_fixtures import make_cohort, read_rows, write_manifest
from nnunet_iph.dataset_conversion import convert_multisite, install_splits
from nnunet_iph.dataset_conversion.splits import SplitCase, choose_test_patients, kfold_splits, loso_splits, size_bins


def _cases(n_patients=30, sites=3, scans_per_patient=1):
    out = []
    for p in range(n_patients):
        vol = [0.0, 0.5, 2.0, 30.0, 80.0][p % 5]
        for s in range(scans_per_patient):
            out.append(SplitCase(f"c{p:03d}_{s}", f"P{p:03d}", f"site{p % sites}", vol))
    return out


def test_kfold_partitions_patients_and_balances_strata():
    cases = _cases(30, 3, scans_per_patient=2)
    splits = kfold_splits(cases, 5, seed=1)
    assert len(splits) == 5
    all_ids = sorted(c.case_id for c in cases)
    vals = [v for f in splits for v in f["val"]]
    assert sorted(vals) == all_ids  # each case validated exactly once
    for f in splits:
        assert sorted(f["train"] + f["val"]) == all_ids and not set(f["train"]) & set(f["val"])
        pats = {c.patient_id for c in cases if c.case_id in f["val"]}
        train_pats = {c.patient_id for c in cases if c.case_id in f["train"]}
        assert not pats & train_pats  # patient level
        assert len(f["val"]) == 12
        sites = Counter(c.site for c in cases if c.case_id in f["val"])
        assert set(sites.values()) == {4}  # 2 patients (x2 scans) per site in each fold
    bins = size_bins({c.patient_id: c.volume_ml for c in cases})
    for f in splits:
        per_bin = Counter(bins[c.patient_id] for c in cases if c.case_id in f["val"])
        assert max(per_bin.values()) - min(per_bin.values()) <= 4
    assert kfold_splits(cases, 5, seed=1) == splits
    assert kfold_splits(cases, 5, seed=2) != splits


def test_kfold_small_and_loso():
    assert kfold_splits(_cases(1), 5) == []
    assert len(kfold_splits(_cases(3), 5)) == 3
    loso, sites = loso_splits(_cases(9, 3))
    assert sites == ["site0", "site1", "site2"]
    assert [len(f["val"]) for f in loso] == [3, 3, 3]
    for f, site in zip(loso, sites):
        assert {c.site for c in _cases(9, 3) if c.case_id in f["val"]} == {site}
        assert site not in {c.site for c in _cases(9, 3) if c.case_id in f["train"]}
    assert loso_splits(_cases(4, 1)) == ([], ["site0"])


def test_choose_test_patients():
    pats = {f"P{i:02d}": f"s{i % 3}" for i in range(20)}
    test = choose_test_patients(pats, 0.2, seed=0)
    assert len(test) == 4 and len({pats[p] for p in test}) == 3
    assert choose_test_patients(pats, 0.2, seed=0) == test
    assert choose_test_patients(pats, 0.0, 0) == set()
    assert len(choose_test_patients({"a": "s"}, 0.9, 0)) == 0  # one training patient always stays
    with pytest.raises(ValueError, match="test_fraction"):
        choose_test_patients(pats, -0.1, 0)


def test_converted_splits_and_patient_grouping(tmp_path):
    root = tmp_path / "src"
    make_cohort(root, n=12, sites=3)
    rows = read_rows(root / "manifest.csv")
    for r in rows:  # two scans per patient
        r["patient_id"] = f"P{int(r['subject_id'][3:]) // 2}"
    manifest = write_manifest(root / "m.csv", rows)
    ds = convert_multisite(manifest, 550, "Splits", tmp_path / "raw", num_folds=3, test_fraction=1 / 6,
                           progress=False)
    cases = {r["case_id"]: r for r in read_rows(ds / "cases.csv")}
    test_pat = {r["patient_id"] for r in cases.values() if r["split"] == "test"}
    assert len(test_pat) == 1 and sum(r["split"] == "test" for r in cases.values()) == 2
    kfold = json.loads((ds / "splits_final.json").read_text(encoding="utf-8"))
    assert kfold == json.loads((ds / "splits_kfold.json").read_text(encoding="utf-8")) and len(kfold) == 3
    for i, f in enumerate(kfold):
        for c in f["val"]:
            assert cases[c]["fold"] == str(i) and cases[c]["split"] == "train"
        assert not {cases[c]["patient_id"] for c in f["val"]} & {cases[c]["patient_id"] for c in f["train"]}
    loso = json.loads((ds / "splits_loso.json").read_text(encoding="utf-8"))
    assert len(loso) == 3 and all(len({cases[c]["site"] for c in f["val"]}) == 1 for f in loso)

    ds2 = convert_multisite(manifest, 551, "Loso", tmp_path / "raw", split_scheme="loso", progress=False)
    assert json.loads((ds2 / "splits_final.json").read_text(encoding="utf-8")) == json.loads((ds2 / "splits_loso.json").read_text(encoding="utf-8"))
    one_site = write_manifest(root / "one.csv", [dict(r, site="A") for r in rows])
    with pytest.raises(ValueError, match="loso.* at least 2 sites"):
        convert_multisite(one_site, 552, "One", tmp_path / "raw", split_scheme="loso", progress=False)


def test_install_splits(tmp_path, monkeypatch):
    manifest = make_cohort(tmp_path / "src", n=6, sites=2)
    ds = convert_multisite(manifest, 553, "Inst", tmp_path / "raw", progress=False)
    pre = tmp_path / "pre"
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(pre))
    dest = install_splits(553)
    assert dest == pre / "Dataset553_Inst" / "splits_final.json"
    assert json.loads(dest.read_text(encoding="utf-8")) == json.loads((ds / "splits_final.json").read_text(encoding="utf-8"))
    install_splits("Dataset553_Inst", scheme="loso")
    assert json.loads(dest.read_text(encoding="utf-8")) == json.loads((ds / "splits_loso.json").read_text(encoding="utf-8"))
    install_splits(ds, pre, scheme="kfold")
    assert json.loads(dest.read_text(encoding="utf-8")) == json.loads((ds / "splits_kfold.json").read_text(encoding="utf-8"))
    with pytest.raises(FileNotFoundError, match="expected one folder Dataset554_"):
        install_splits(554)
    with pytest.raises(ValueError, match="unknown split scheme"):
        install_splits(553, scheme="random")
