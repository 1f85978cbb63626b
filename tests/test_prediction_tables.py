"""Predictions CSVs: reading, every validation problem named, and alignment with the truth."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dermlearn.errors import DataError
from dermlearn.evaluation.tables import align_truth, read_predictions

CLASSES = ["mel", "nv", "bcc"]


def _csv(tmp_path, text: str, name: str = "preds.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD = ("image,nv,mel,bcc,label,fold\n"
        "ISIC_0000001.jpg,0.7,0.2,0.1,nv,0\n"
        "ISIC_0000002,0.1,0.8,0.1,mel,1\n"
        " ISIC_0000003 ,0.3333,0.3333,0.3334,bcc,1\n")


def test_reads_a_good_file_in_class_order(tmp_path):
    frame = read_predictions(_csv(tmp_path, GOOD), CLASSES)
    assert frame.columns.tolist() == ["image", "mel", "nv", "bcc"]     # label, fold dropped
    assert frame["image"].tolist() == ["ISIC_0000001", "ISIC_0000002", "ISIC_0000003"]
    assert frame["mel"].dtype == np.float64 and frame["mel"].tolist() == [0.2, 0.8, 0.3333]


def test_without_classes_every_non_meta_column_is_a_class(tmp_path):
    frame = read_predictions(_csv(tmp_path, GOOD))
    assert frame.columns.tolist() == ["image", "nv", "mel", "bcc"]


def test_reads_a_frame(tmp_path):
    frame = pd.DataFrame({"image": ["a", "b"], "mel": [0.4, 0.9], "nv": [0.6, 0.1]},
                         index=[7, 3])
    out = read_predictions(frame, ["nv", "mel"])
    assert out.columns.tolist() == ["image", "nv", "mel"] and out.index.tolist() == [0, 1]
    bad = frame.assign(mel=[0.4, 1.9])
    with pytest.raises(DataError, match=r"predictions table.*\n.*row 1 \(b\): 1.9"):
        read_predictions(bad, ["nv", "mel"], require_sum_to_one=False)


def test_missing_image_column(tmp_path):
    with pytest.raises(DataError, match="no 'image' column") as e:
        read_predictions(_csv(tmp_path, "name,mel,nv\na,0.5,0.5\n"))
    assert "preds.csv" in str(e.value)


def test_duplicate_columns(tmp_path):
    with pytest.raises(DataError, match="duplicate column.*: mel"):
        read_predictions(_csv(tmp_path, "image,mel,mel,nv\na,0.2,0.3,0.5\n"))


def test_missing_and_unexpected_class_columns(tmp_path):
    with pytest.raises(DataError) as e:
        read_predictions(_csv(tmp_path, "image,mel,nv,akiec\na,0.2,0.3,0.5\n"), CLASSES)
    assert len(e.value.problems) == 2
    assert "missing class column(s): bcc" in e.value.problems[0]
    assert "unexpected column(s)" in e.value.problems[1] and "akiec" in e.value.problems[1]


def test_duplicate_images_named_with_lines(tmp_path):
    text = "image,mel,nv\na,0.5,0.5\nb,0.5,0.5\na.JPG,0.5,0.5\nb,0.5,0.5\nc,0.5,0.5\n"
    with pytest.raises(DataError) as e:
        read_predictions(_csv(tmp_path, text))
    assert e.value.problems == ["duplicate image row(s): a (line 2, line 4), b (line 3, line 5)"]


def test_missing_non_numeric_and_out_of_range_values_named(tmp_path):
    text = ("image,mel,nv\n"
            "a,0.5,0.5\n"
            "b,,1.0\n"
            "c,high,0.5\n"
            "d,1.2,-0.2\n"
            ",0.5,0.5\n"
            "f,0.5\n")                                # short row: nv missing
    with pytest.raises(DataError) as e:
        read_predictions(_csv(tmp_path, text))
    msg = str(e.value)
    assert "empty image id in line 6" in msg
    assert "column mel: missing probability in line 3 (b)" in msg
    assert "column mel: non-numeric probability in line 4 (c): 'high'" in msg
    assert "column mel: probability outside [0, 1] in line 5 (d): 1.2" in msg
    assert "column nv: probability outside [0, 1] in line 5 (d): -0.2" in msg
    assert "column nv: missing probability in line 7 (f)" in msg
    assert "field count differs from the header's 3: line 7: 2 fields" in msg
    assert "sum to 1" not in msg                      # rows with a missing value are not summed


def test_rows_must_sum_to_one_unless_told_otherwise(tmp_path):
    text = "image,mel,nv\na,0.5,0.5\nb,0.3,0.3\nc,0.5,0.5004\n"
    with pytest.raises(DataError,
                       match=r"do not sum to 1 \(tolerance 0.001\) in line 3 \(b\): 0.6$"):
        read_predictions(_csv(tmp_path, text))
    frame = read_predictions(_csv(tmp_path, text), require_sum_to_one=False)
    assert len(frame) == 3


def test_many_bad_rows_are_counted(tmp_path):
    rows = "".join(f"img{i},0.9,0.9\n" for i in range(12))
    with pytest.raises(DataError) as e:
        read_predictions(_csv(tmp_path, "image,mel,nv\n" + rows))
    (problem,) = e.value.problems
    assert "line 2 (img0): 1.8" in problem and "line 7 (img5)" not in problem
    assert problem.endswith("and 7 more (12 in all)")


def test_all_problems_reported_together(tmp_path):
    text = "image,mel,nv,extra\na,0.5,0.5,1\na,2,0.5,1\n"
    with pytest.raises(DataError) as e:
        read_predictions(_csv(tmp_path, text), ["mel", "nv"])
    kinds = " | ".join(e.value.problems)
    assert "unexpected column" in kinds and "duplicate image" in kinds
    assert "outside [0, 1]" in kinds and "sum to 1" in kinds


def test_ragged_and_unreadable_csvs_are_data_errors(tmp_path):
    text = "image,mel,nv\na,0.5,0.5,0.1,0.2\n\nb,0.5,0.5\n"
    with pytest.raises(DataError, match="header's 3: line 2: 5 fields$"):
        read_predictions(_csv(tmp_path, text))
    blank_lines = read_predictions(_csv(tmp_path, "image,mel,nv\n\nb,0.5,0.5\n\n"))
    assert blank_lines["image"].tolist() == ["b"]
    with pytest.raises(DataError, match="cannot read"):
        read_predictions(tmp_path / "absent.csv")
    with pytest.raises(DataError, match="no header row"):
        read_predictions(_csv(tmp_path, ""))
    empty = read_predictions(_csv(tmp_path, "image,mel,nv\n"))
    assert empty.columns.tolist() == ["image", "mel", "nv"] and len(empty) == 0


# -- alignment ------------------------------------------------------------------------------
def test_align_truth_with_a_mapping(tmp_path):
    frame = read_predictions(_csv(tmp_path, GOOD), CLASSES)
    truth = {"ISIC_0000003.jpg": "bcc", "ISIC_0000001": "nv", "ISIC_0000002": "mel"}
    y, probs, images = align_truth(frame, truth, CLASSES)
    assert y.tolist() == [1, 0, 2]
    np.testing.assert_allclose(probs[0], [0.2, 0.7, 0.1])
    assert images.tolist() == ["ISIC_0000001", "ISIC_0000002", "ISIC_0000003"]
    labels, probs2, _ = align_truth(frame, pd.Series(truth))      # no classes: the labels
    assert labels.tolist() == ["nv", "mel", "bcc"]
    np.testing.assert_array_equal(probs, probs2)
    y, probs, _ = align_truth(frame, truth, ["bcc", "nv", "mel"])  # columns follow classes
    assert y.tolist() == [1, 2, 0] and probs[0].tolist() == [0.1, 0.7, 0.2]


def test_align_truth_labels_need_not_be_classes_without_classes(tmp_path):
    frame = read_predictions(_csv(tmp_path, GOOD), CLASSES)
    truth = {"ISIC_0000001": "blue_naevus", "ISIC_0000002": "mel", "ISIC_0000003": "scc"}
    assert align_truth(frame, truth)[0].tolist() == ["blue_naevus", "mel", "scc"]
    with pytest.raises(DataError, match="not among the classes"):
        align_truth(frame, truth, CLASSES)
    with pytest.raises(DataError, match="without a label: ISIC_0000002"):
        align_truth(frame, pd.DataFrame({"image": ["ISIC_0000001", "ISIC_0000002",
                                                   "ISIC_0000003"], "label": ["nv", None, "bcc"]}))


def test_align_truth_with_label_and_one_hot_frames(tmp_path):
    frame = read_predictions(_csv(tmp_path, GOOD), CLASSES)
    with_labels = pd.read_csv(_csv(tmp_path, GOOD))                # val_predictions.csv as truth
    y, _, _ = align_truth(frame, with_labels, CLASSES)
    assert y.tolist() == [1, 0, 2]
    isic = pd.DataFrame({"image": ["ISIC_0000002", "ISIC_0000001", "ISIC_0000003"],
                         "mel": [1.0, 0.0, 0.0], "nv": [0.0, 1.0, 0.0], "bcc": [0.0, 0.0, 1.0],
                         "score_weight": 1.0})
    y, _, _ = align_truth(frame, isic, CLASSES)
    assert y.tolist() == [1, 0, 2]
    isic.loc[0, "nv"] = 1.0
    with pytest.raises(DataError, match="without exactly one class.*ISIC_0000002"):
        align_truth(frame, isic, CLASSES)


def test_align_truth_names_missing_extra_and_unknown(tmp_path):
    frame = read_predictions(_csv(tmp_path, GOOD), CLASSES)
    truth = {"ISIC_0000001": "nv", "ISIC_0000002": "scc", "ISIC_0000009": "mel"}
    with pytest.raises(DataError) as e:
        align_truth(frame, truth, CLASSES)
    msg = str(e.value)
    assert "1 truth image(s) without a prediction: ISIC_0000009" in msg
    assert "1 predicted image(s) without truth: ISIC_0000003" in msg
    assert "ISIC_0000002 ('scc')" in msg
    dup = pd.DataFrame({"image": ["ISIC_0000001", "ISIC_0000001.jpg", "ISIC_0000002",
                                  "ISIC_0000003"], "label": ["nv", "nv", "mel", "bcc"]})
    with pytest.raises(DataError, match="duplicate truth image.*ISIC_0000001"):
        align_truth(frame, dup)
