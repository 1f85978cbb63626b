"""Issue 23: reading a user's own data -- column options, separators, label matching and
aliases, ISIC 'UNK' rows, lenient reading, summarised problem lists, warnings in training.

Each test here failed on main before the change (the defect it names)."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest

from dermlearn.data import load
from dermlearn.errors import DataError, TaxonomyError
from dermlearn.taxonomy import load_taxonomy

PH2_LABELS = {"Common Nevus": "nv", "Atypical Nevus": "nv", "Melanoma": "mel"}


@pytest.fixture(scope="module")
def ph2_images(tmp_path_factory) -> tuple[Path, list[str]]:
    """Twelve real PH2 photos copied into a folder, and their ids."""
    from conftest import SHARED_DATA

    source = SHARED_DATA / "ph2" / "images"
    if not source.exists():
        pytest.skip("../shared/data/ph2 not found")
    folder = tmp_path_factory.mktemp("ph2-images")
    ids = sorted(p.stem for p in source.glob("*.jpg"))[:12]
    for image_id in ids:
        shutil.copyfile(source / f"{image_id}.jpg", folder / f"{image_id}.jpg")
    return folder, ids


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------- defect 1: columns, separator
def test_label_column_named_by_option(ph2_images, tmp_path):
    folder, ids = ph2_images
    csv = _write(folder / "histo.csv", "file,histo_dx\n" + "".join(
        f"{i}.jpg,{'mel' if k % 2 else 'nv'}\n" for k, i in enumerate(ids)))
    # guessed now (a usual name), and namable by option
    assert load(csv).class_counts() == {"nv": 6, "mel": 6}
    csv2 = _write(folder / "odd.csv", "picture;finding\n" + "".join(
        f"{i}.jpg;{'mel' if k % 2 else 'nv'}\n" for k, i in enumerate(ids)))
    with pytest.raises(DataError, match="--label-col"):
        load(csv2)
    manifest = load(csv2, label_col="finding", image_col="picture")
    assert len(manifest) == 12 and manifest.class_counts() == {"nv": 6, "mel": 6}
    with pytest.raises(DataError, match=r"column 'nope' \(given with --label-col\) not found"):
        load(csv2, label_col="nope")


def test_semicolon_csv_with_diagnosis_column_is_sniffed(ph2_images):
    folder, ids = ph2_images
    csv = _write(folder / "semi.csv", "image_id;diagnosis;lesion\n" + "".join(
        f"{i};{'Melanoma' if k // 2 % 3 == 0 else 'Common nevus'};L{k // 2}\n"
        for k, i in enumerate(ids)))
    manifest = load(csv)
    assert manifest.class_counts() == {"common_nevus": 8, "mel": 4}
    assert manifest.n_lesions == 6
    # an explicit separator wins; a wrong one says the header was one column
    with pytest.raises(DataError, match="read as one column"):
        load(csv, sep=",")


def test_reader_option_that_does_not_apply_is_named(ph2_dir):
    with pytest.raises(DataError, match=r"read as ph2 data, which does not take --label-col.*"
                                        r"csv:"):
        load(ph2_dir, label_col="dx")


# ----------------------------------------------------------------- defect 2: flat and case
def test_flat_taxonomy_merges_labels_differing_in_case(ph2_images):
    folder, ids = ph2_images
    csv = _write(folder / "case.csv", "image,label\n" + "".join(
        f"{i},{['mel', 'MEL', 'Nevus', 'nevus'][k % 4]}\n" for k, i in enumerate(ids)))
    manifest = load(csv, taxonomy="flat")
    assert manifest.class_counts() == {"MEL": 6, "Nevus": 6}


# ----------------------------------------------------------------- defect 3: names, aliases
@pytest.mark.parametrize("label, node", [
    ("Pigmented benign keratosis", "bkl"), ("Bowen disease", "akiec"),
    ("Bowen's disease", "akiec"), ("SK", "seborrheic_keratosis"), ("LM", "mel"),
    ("seborrheic-keratosis", "seborrheic_keratosis"), ("Lentigo, NOS", "lentigo_nos")])
def test_common_diagnosis_names_are_known(label, node):
    assert load_taxonomy("dermatology").canonical(label) == node


def test_taxonomy_aliases_lists_every_known_name(tmp_path, capsys):
    from dermlearn.cli import main

    assert main(["taxonomy", "aliases", "--grep", "BOWEN"]) == 0
    out = capsys.readouterr().out
    assert "Bowen's disease" in out and "Morbus Bowen" in out and "akiec" in out
    assert "nv" not in out.split()
    aliases = _write(tmp_path / "mine.yaml", "Morbus Bowen in situ: akiec\n")
    assert main(["taxonomy", "aliases", "--grep", "in situ", "--aliases", str(aliases)]) == 0
    assert "Morbus Bowen in situ" in capsys.readouterr().out
    assert main(["taxonomy", "aliases", "--grep", "no such diagnosis"]) == 1


def test_unknown_label_names_nearest_and_the_ways_out(ph2_images):
    folder, ids = ph2_images
    csv = _write(folder / "unknown.csv", "image,label\n" + "".join(
        f"{i},{'pigmented keratosis' if k < 10 else 'Melanoma'}\n" for k, i in enumerate(ids)))
    with pytest.raises(DataError) as caught:
        load(csv)
    text = str(caught.value)
    assert "nearest known names: 'pigmented benign keratosis' (bkl)" in text
    assert "--taxonomy flat" in text and "--aliases FILE" in text
    assert "dermlearn taxonomy aliases" in text
    # ten rows of one unknown label: summarised, not ten lines
    assert text.count("pigmented keratosis") == 1 and "10 image(s)" in text
    assert len(text.splitlines()) < 8


def test_alias_file_extends_the_tree(ph2_images, tmp_path):
    folder, ids = ph2_images
    csv = _write(folder / "own.csv", "image,label\n" + "".join(
        f"{i},{'naevus banal' if k % 2 else 'MM'}\n" for k, i in enumerate(ids)))
    aliases = _write(tmp_path / "aliases.yaml", "naevus banal: common_nevus\nMM: Melanoma\n")
    manifest = load(csv, aliases=aliases)
    assert manifest.class_counts() == {"common_nevus": 6, "mel": 6}
    # the tree keeps the aliases (a run's run.json and a model's config hold its to_dict)
    again = load_taxonomy(manifest.taxonomy.to_dict())
    assert again.canonical("Naevus-banal") == "common_nevus"
    bad = _write(tmp_path / "bad.yaml", "MM: melanomma\n")
    with pytest.raises(TaxonomyError, match=r"melanomma.*close: 'mel'"):
        load(csv, aliases=bad)
    clash = _write(tmp_path / "clash.yaml", "nevus: mel\n")
    with pytest.raises(TaxonomyError, match="already means node 'nv'"):
        load(csv, aliases=clash)


# ----------------------------------------------------------------- defect 5: ISIC UNK
def _isic(folder: Path, ids: list[str], unk: int) -> Path:
    lines = ["image,MEL,NV,BCC,UNK"]
    for k, i in enumerate(ids):
        hot = [0, 0, 0, 0]
        hot[3 if k < unk else k % 2] = 1
        lines.append(f"{i}," + ",".join(f"{v}.0" for v in hot))
    return _write(folder / "ISIC_GroundTruth.csv", "\n".join(lines) + "\n")


def test_isic_unk_row_is_explained_and_dropped_leniently(ph2_images, tmp_path):
    folder, ids = ph2_images
    root = tmp_path / "isic"
    shutil.copytree(folder, root)
    _isic(root, ids, unk=2)
    with pytest.raises(DataError) as caught:
        load(f"isic:{root}")
    text = str(caught.value)
    assert "UNK=1" in text and "none of the other diagnoses" in text and "--lenient" in text
    assert "found []" not in text and "empty_label" not in text
    manifest = load(f"isic:{root}", invalid="drop")
    assert len(manifest) == 10 and set(manifest.classes) == {"mel", "nv"}
    assert manifest.dropped["image_id"].tolist() == ids[:2]
    assert set(manifest.dropped["kind"]) == {"unknown_class"}


# ----------------------------------------------------------------- lenient reading
def test_lenient_drops_missing_unknown_and_unreadable_rows_with_reasons(ph2_images, tmp_path):
    folder, ids = ph2_images
    root = tmp_path / "lenient"
    shutil.copytree(folder, root)
    (root / f"{ids[0]}.jpg").unlink()                       # missing file
    (root / f"{ids[1]}.jpg").write_bytes(b"not a jpeg")     # unreadable image
    labels = ["nv"] * 12
    labels[2] = "wobble"                                    # unknown label
    labels[3], labels[4] = "mel", "nv"                      # one lesion, two labels
    lesions = [f"L{k}" for k in range(12)]
    lesions[4] = "L3"
    _write(root / "data.csv", "image,label,lesion_id\n" + "".join(
        f"{i},{lab},{les}\n" for i, lab, les in zip(ids, labels, lesions)))
    manifest = load(root / "data.csv", invalid="drop")
    dropped = manifest.dropped.set_index("image_id")
    assert dropped.loc[ids[0], "kind"] == "missing_file"
    assert dropped.loc[ids[1], "kind"] == "unreadable_image"
    assert dropped.loc[ids[2], "kind"] == "unknown_label"
    assert set(dropped.loc[[ids[3], ids[4]], "kind"]) == {"lesion_label_conflict"}
    assert len(manifest) == 7 and not [p for p in manifest.problems if p.severity == "error"]
    written = manifest.write_dropped(tmp_path / "dropped.csv")
    assert pd.read_csv(written)["image_id"].tolist() == dropped.index.tolist()
    with pytest.raises(DataError):  # strict, the default, refuses as before
        load(root / "data.csv")


# ----------------------------------------------------------------- defect 4: long lists
def test_long_problem_lists_are_summarised(tmp_path):
    rows = "".join(f"IMG_{k:04d},nv\n" for k in range(523))
    csv = _write(tmp_path / "many.csv", "image,label\n" + rows)
    with pytest.raises(DataError) as caught:
        load(csv)
    text = str(caught.value)
    assert "523 problem(s)" in text and "[missing_file] 523 times" in text
    assert "... and 520 more" in text and f"dermlearn data inspect {tmp_path}" in text
    assert len(text.splitlines()) < 10
    assert len(caught.value.problems) == 523  # all kept for the API


# ----------------------------------------------------------------- defect 9: warnings
def test_split_warns_of_classes_with_fewer_images_than_folds(tiny_data, caplog):
    from dermlearn.splits import classes_short_of_parts, make_splits

    manifest = load(tiny_data)
    table = manifest.table.copy()
    keep = table.index[(table["label"] != "bkl")].tolist() + \
        table.index[table["label"] == "bkl"].tolist()[:3]
    small = manifest.subset(sorted(keep))
    with caplog.at_level(logging.WARNING, logger="dermlearn"):
        splits = make_splits(small, 5)
    assert classes_short_of_parts(splits) == {"bkl": (3, 5)}
    assert "bkl (3 images)" in caplog.text and "fewer images than the 5 parts" in caplog.text
