"""Grouped, stratified splits: no lesion in two parts, class ratios kept, reproducible."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dermlearn.cli import main
from dermlearn.data import load
from dermlearn.data.manifest import Manifest
from dermlearn.errors import DataError, LeakageError
from dermlearn.splits import TEST, check_no_leakage, make_splits, split_summary
from dermlearn.taxonomy import load_taxonomy


def synthetic_manifest(n_lesions: int = 300, seed: int = 0, with_patients: bool = True) -> Manifest:
    rng = np.random.default_rng(seed)
    rows = []
    for lesion in range(n_lesions):
        label = rng.choice(["nv", "mel", "bkl"], p=[0.7, 0.2, 0.1])
        for k in range(rng.integers(1, 4)):
            rows.append({"image_id": f"I{lesion}_{k}", "path": f"/x/I{lesion}_{k}.jpg",
                         "label": label, "lesion_id": f"L{lesion}",
                         "patient_id": f"P{lesion // 3}" if with_patients else None,
                         "age": None, "sex": None, "site": None, "label_source": None,
                         "label_raw": label, "source_row": str(len(rows))})
    return Manifest(pd.DataFrame(rows), taxonomy=load_taxonomy("dermatology"), source="synthetic",
                    format="csv")


def test_folds_group_and_stratify():
    m = synthetic_manifest()
    s = make_splits(m, 5, test_fraction=0.2, seed=3)
    assert set(s["fold"]) == {"0", "1", "2", "3", "4", TEST}
    assert s.groupby("lesion_id")["fold"].nunique().max() == 1
    assert 0.15 < (s["fold"] == TEST).mean() < 0.25
    assert split_summary(s)["max_dev_pts"].max() < 6  # small set: a few points at most
    pd.testing.assert_frame_equal(s, make_splits(m, 5, test_fraction=0.2, seed=3))
    assert not s["fold"].equals(make_splits(m, 5, test_fraction=0.2, seed=4)["fold"])


def test_patient_grouping():
    m = synthetic_manifest()
    s = make_splits(m, 4, group="patient", seed=0)
    assert s.groupby("patient_id")["fold"].nunique().max() == 1
    with pytest.raises(DataError, match="no patient_id"):
        make_splits(synthetic_manifest(with_patients=False), 4, group="patient")


def test_leakage_check_names_the_lesion():
    s = pd.DataFrame({"image_id": ["a", "b", "c"], "lesion_id": ["L1", "L1", "L2"],
                      "label": ["nv"] * 3, "fold": ["0", "1", "1"]})
    with pytest.raises(LeakageError, match=r"lesion 'L1' is in parts 0 \(a\), 1 \(b\)"):
        check_no_leakage(s)


def test_real_ham10000_five_folds(ham10000_dir, tmp_path, capsys):
    out = tmp_path / "splits.csv"
    assert main(["data", "split", str(ham10000_dir), "--folds", "5", "--group", "lesion",
                 "--seed", "0", "--out", str(out)]) == 0
    s = pd.read_csv(out, dtype=str)
    assert list(s.columns) == ["image_id", "lesion_id", "label", "fold"]
    assert len(s) == 8017 and s.groupby("lesion_id")["fold"].nunique().max() == 1
    whole = s["label"].value_counts(normalize=True)
    for _, part in s.groupby("fold"):
        share = part["label"].value_counts(normalize=True).reindex(whole.index, fill_value=0)
        assert (share - whole).abs().max() * 100 <= 2.0
    check_no_leakage(s, manifest=load(ham10000_dir))
