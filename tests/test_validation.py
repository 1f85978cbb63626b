"""Bad input: every problem of a dataset reported together, naming the file/row; no traceback."""
from __future__ import annotations

import json

import pytest

from dermlearn.cli import main
from dermlearn.data import load
from dermlearn.errors import DataError, LeakageError
from dermlearn.splits import load_splits, make_splits, save_splits

from conftest import BAD, write_images


@pytest.fixture()
def broken_ham(tmp_path, good_jpeg, copy_bad):
    root = tmp_path / "ham"
    root.mkdir()
    (root / "HAM10000_metadata.csv").write_text(
        "lesion_id,image_id,dx,dx_type,age,sex,localization\n"
        "HAM_1,ISIC_1,mel,histo,55,male,back\n"          # line 2: fine
        "HAM_1,ISIC_2,nv,histo,55,male,back\n"           # line 3: lesion HAM_1 has two labels
        "HAM_2,ISIC_3,kitten,histo,40,female,face\n"     # line 4: label outside the taxonomy
        "HAM_3,ISIC_4,,histo,40,female,face\n"           # line 5: empty label
        "HAM_4,ISIC_5,bkl,histo,40,female,face\n"        # line 6: image file missing
        "HAM_5,ISIC_1,mel,histo,55,male,back\n"          # line 7: duplicate image id
        "HAM_6,ISIC_6,bcc,histo,61,male,back\n")         # line 8: unreadable (truncated) JPEG
    write_images(root / "images", ["ISIC_1.jpg", "ISIC_2.jpg", "ISIC_3.jpg", "ISIC_4.jpg"],
                 good_jpeg)
    copy_bad("truncated.jpg", root / "images" / "ISIC_6.jpg")
    return root


def test_all_problems_reported_together(broken_ham):
    with pytest.raises(DataError) as info:
        load(broken_ham)
    kinds = {p.kind for p in info.value.problems}
    assert kinds == {"lesion_label_conflict", "unknown_label", "empty_label", "missing_file",
                     "duplicate_id"}
    text = str(info.value)
    assert "HAM10000_metadata.csv:4" in text and "'kitten'" in text
    assert "ISIC_5" in text and "not found" in text
    assert "HAM_1" in text and "2 labels" in text


def test_unreadable_images_found_by_deep_check(broken_ham):
    m = load(broken_ham, invalid="keep", check_images=True)
    unreadable = [p for p in m.problems if p.kind == "unreadable_image"]
    assert len(unreadable) == 1 and "ISIC_6.jpg" in unreadable[0].message
    assert "truncated" in unreadable[0].message


def test_cli_inspect_reports_problems_without_traceback(broken_ham, capsys):
    code = main(["data", "inspect", str(broken_ham), "--json", "--check-images"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    assert out["n_images"] == 7 and len(out["problems"]) == 6
    assert all(p["message"] for p in out["problems"])


def test_cli_split_refuses_bad_data(broken_ham, capsys, tmp_path):
    code = main(["data", "split", str(broken_ham), "--out", str(tmp_path / "s.csv")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "unknown_label" in err
    assert not (tmp_path / "s.csv").exists()


def test_non_utf8_csv(tmp_path, capsys):
    csv = tmp_path / "latin1.csv"
    csv.write_bytes((BAD / "latin1.csv").read_bytes())
    with pytest.raises(DataError, match=r"latin1.csv: not UTF-8 text \(byte 0xe9"):
        load(f"csv:{csv}")
    assert main(["data", "inspect", f"csv:{csv}"]) == 2
    assert "not UTF-8" in capsys.readouterr().err


def test_missing_dataset_path(capsys, tmp_path):
    assert main(["data", "inspect", str(tmp_path / "nowhere")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_lesion_in_two_folds_is_refused(tmp_path, good_jpeg):
    root = tmp_path / "ds"
    write_images(root / "mel", [f"m{i}.jpg" for i in range(6)], good_jpeg)
    write_images(root / "nv", [f"n{i}.jpg" for i in range(6)], good_jpeg)
    manifest = load(root)
    splits = make_splits(manifest, 3, seed=1)
    path = save_splits(splits, tmp_path / "splits.csv")
    load_splits(path, manifest)  # clean
    lines = path.read_text().splitlines()
    header, first = lines[0], lines[1].split(",")
    other = next(ln for ln in lines[2:] if ln.split(",")[3] != first[3]).split(",")
    # Re-label another image as belonging to the first image's lesion: a leak.
    tampered = [header] + [",".join(first)] + [
        ",".join(r[:1] + [first[1]] + r[2:]) if r == other else ",".join(r)
        for r in (ln.split(",") for ln in lines[2:])]
    path.write_text("\n".join(tampered) + "\n")
    with pytest.raises(LeakageError) as info:
        load_splits(path)
    assert first[1] in str(info.value) and "splits.csv" in str(info.value)
    # Checked against the manifest, the split file's own lesion ids are not trusted: no leak.
    load_splits(path, manifest)
