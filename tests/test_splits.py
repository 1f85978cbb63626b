"""Grouped, stratified splits: no lesion in two parts, class ratios kept, reproducible."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dermlearn.cli import main
from dermlearn.data import load
from dermlearn.data.manifest import Manifest
from dermlearn.errors import DataError, DermlearnError, LeakageError
from dermlearn.splits import (
    TEST,
    SplitError,
    check_no_leakage,
    load_splits,
    make_splits,
    save_splits,
    split_summary,
)
from dermlearn.taxonomy import load_taxonomy

from conftest import write_images


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
    assert set(s["fold"]) == {0, 1, 2, 3, 4, TEST} and s["fold"].dtype == np.int64
    assert s.groupby("lesion_id")["fold"].nunique().max() == 1
    assert 0.15 < (s["fold"] == TEST).mean() < 0.25
    assert split_summary(s)["max_dev_pts"].max() < 6  # small set: a few points at most
    pd.testing.assert_frame_equal(s, make_splits(m, 5, test_fraction=0.2, seed=3))
    assert not s["fold"].equals(make_splits(m, 5, test_fraction=0.2, seed=4)["fold"])


def test_fold_ids_are_integers_in_memory_and_in_files(tmp_path):
    """Issue 20, defect 6: ``fold`` held strings, so ``splits[splits.fold == 0]`` was empty."""
    m = synthetic_manifest()
    s = make_splits(m, 3, test_fraction=0.2, seed=0)
    assert (s.fold == 0).sum() > 0 and (s.fold == TEST).sum() > 0
    saved = save_splits(s, tmp_path / "splits.csv")
    assert pd.read_csv(saved)["fold"].dtype == np.int64  # plain pandas reads the same ints
    loaded = load_splits(saved, m)
    assert loaded["fold"].tolist() == s["fold"].tolist() and (loaded.fold == 0).sum() > 0
    # A split file of an older version ("0".."K-1", "test") reads as the same ints.
    legacy = tmp_path / "legacy.csv"
    s.assign(fold=s["fold"].map(lambda f: "test" if f == TEST else str(f))).to_csv(legacy,
                                                                                index=False)
    assert load_splits(legacy, m)["fold"].tolist() == s["fold"].tolist()
    bad = tmp_path / "bad.csv"
    s.assign(fold=["x"] + s["fold"].tolist()[1:]).to_csv(bad, index=False)
    with pytest.raises(DataError, match=r"bad\.csv: 1 fold value\(s\) .* line 2: 'x'"):
        load_splits(bad, m)


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


def test_split_options_out_of_range_are_user_errors():
    m = synthetic_manifest(n_lesions=30)
    for kwargs, flag in [({"test_fraction": 1.5}, "--test-fraction"),
                         ({"test_fraction": -0.1}, "--test-fraction"),
                         ({"n_folds": 0}, "--folds"), ({"group": "ward"}, "--group")]:
        options = {"n_folds": 3, **kwargs}
        with pytest.raises(SplitError, match=flag) as info:
            make_splits(m, options.pop("n_folds"), **options)
        # a DermlearnError (the CLI prints it, no traceback) and still a ValueError
        assert isinstance(info.value, DermlearnError) and isinstance(info.value, ValueError)
    # every class smaller than the number of parts: named, not scikit-learn's traceback
    small = synthetic_manifest(n_lesions=6, seed=1)
    small = small.subset(np.flatnonzero(~small.table.duplicated("lesion_id")))
    assert small.table["label"].value_counts().max() < 5
    with pytest.raises(SplitError, match="every class has fewer than 5 images"):
        make_splits(small, 5)


def test_cli_split_rejects_bad_options(tmp_path, capsys, good_jpeg):
    write_images(tmp_path, [f"i{i}.jpg" for i in range(6)], good_jpeg)
    csv = tmp_path / "m.csv"
    csv.write_text("path,label,lesion_id\n" + "".join(f"i{i}.jpg,nv,L{i}\n" for i in range(6)))
    for option in (["--test-fraction", "1.5"], ["--folds", "0"]):
        assert main(["data", "split", f"csv:{csv}", "--taxonomy", "flat",
                     "--out", str(tmp_path / "s.csv"), *option]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and option[0] in err
    assert not (tmp_path / "s.csv").exists()


def test_split_file_must_cover_each_image_once(tmp_path):
    m = synthetic_manifest(n_lesions=30)
    path = save_splits(make_splits(m, 3, seed=0), tmp_path / "splits.csv")
    assert len(load_splits(path, m)) == len(m)
    lines = path.read_text().splitlines()
    first_id = lines[1].split(",")[0]
    dropped = tmp_path / "dropped.csv"  # no row for one dataset image
    dropped.write_text("\n".join(lines[:1] + lines[2:]) + "\n")
    with pytest.raises(DataError, match=rf"dropped\.csv: 1 of the dataset's {len(m)} images "
                                        rf"have no row.*'{first_id}'"):
        load_splits(dropped, m)
    load_splits(dropped)  # without a dataset there is nothing to be complete against
    repeated = tmp_path / "repeated.csv"  # the same image twice
    repeated.write_text("\n".join(lines + lines[1:3]) + "\n")
    with pytest.raises(DataError, match=rf"repeated\.csv: 2 image id\(s\) have more than one "
                                        rf"row, e\.g\. '{first_id}' \(lines 2, {len(lines) + 1}\)"):
        load_splits(repeated, m)
    many = tmp_path / "many.csv"  # a few examples quoted, the rest counted
    many.write_text("\n".join(lines[:1] + lines[9:]) + "\n")
    with pytest.raises(DataError, match=r"many\.csv: 8 of the dataset's .* \(3 more\)"):
        load_splits(many, m)
    no_fold = tmp_path / "no_fold.csv"
    no_fold.write_text("\n".join(lines[:1] + [lines[1].rsplit(",", 1)[0] + ","] + lines[2:]))
    with pytest.raises(DataError, match=r"no_fold\.csv: 1 row\(s\) have an empty fold \(line"
                                        r"\(s\) 2\)"):
        load_splits(no_fold, m)


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
