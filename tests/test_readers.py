"""Each reader on a tiny copy of its dataset's distributed layout, and on the real data."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from dermlearn.data import detect_format, load, parse_spec
from dermlearn.errors import DataError

from conftest import write_images


def make_ham(root: Path, jpeg: bytes) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "HAM10000_metadata.csv").write_text(
        "lesion_id,image_id,dx,dx_type,age,sex,localization\n"
        "HAM_1,ISIC_1,mel,histo,55.0,male,back\n"
        "HAM_1,ISIC_2,mel,histo,55.0,male,back\n"
        "HAM_2,ISIC_3,nv,follow_up,,unknown,unknown\n"
        "HAM_3,ISIC_4,bkl,consensus,70.0,female,lower extremity\n")
    write_images(root / "HAM10000_images_part_1", ["ISIC_1.jpg", "ISIC_2.jpg"], jpeg)
    write_images(root / "HAM10000_images_part_2", ["ISIC_3.jpg", "ISIC_4.jpg"], jpeg)
    return root


def test_ham10000_official_layout(tmp_path, good_jpeg):
    root = make_ham(tmp_path / "ham", good_jpeg)
    (root / "masks").mkdir()
    (root / "masks" / "ISIC_1_segmentation.png").write_bytes(b"")
    m = load(root)
    assert m.format == "ham10000" and len(m) == 4 and m.n_lesions == 3
    assert m.class_counts() == {"nv": 1, "bkl": 1, "mel": 2}
    row = m.table.set_index("image_id").loc["ISIC_3"]
    assert row["label_source"] == "follow_up" and pd.isna(row["sex"]) and pd.isna(row["site"])
    assert m.table.set_index("image_id").loc["ISIC_4", "site"] == "lower extremity"
    assert m.table["mask_path"].notna().sum() == 1
    assert Path(m.table.loc[0, "path"]).parent.name == "HAM10000_images_part_1"
    assert m.open_image(0).mode == "RGB"


def test_isic2019_one_hot_with_metadata(tmp_path, good_jpeg):
    root = tmp_path / "isic"
    root.mkdir()
    (root / "ISIC_2019_Training_GroundTruth.csv").write_text(
        "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK\n"
        "ISIC_0000000,0.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0\n"
        "ISIC_0000001,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0\n"
        "ISIC_0000002,0.0,0.0,0.0,1.0,0.0,0.0,0.0,0.0,0.0\n"
        "ISIC_0000003,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0,0.0\n")
    (root / "ISIC_2019_Training_Metadata.csv").write_text(
        "image,age_approx,anatom_site_general,lesion_id,sex\n"
        "ISIC_0000000,55,anterior torso,BCN_0000001,female\n"
        "ISIC_0000001,30,,BCN_0000002,male\n"
        "ISIC_0000002,,head/neck,,\n"
        "ISIC_0000003,80,upper extremity,BCN_0000004,male\n")
    write_images(root / "ISIC_2019_Training_Input", [f"ISIC_000000{i}.jpg" for i in range(4)],
                 good_jpeg)
    m = load(root, invalid="keep")
    assert m.format == "isic"
    assert m.labels == ["nv", "mel", "akiec", "scc"]
    t = m.table.set_index("image_id")
    assert t.loc["ISIC_0000000", "site"] == "anterior torso" and t.loc["ISIC_0000001", "age"] == 30
    assert t.loc["ISIC_0000002", "lesion_id"] == "ISIC_0000002"  # no lesion id: own lesion
    assert [p.kind for p in m.problems] == ["no_lesion_id"]
    assert m.problems[0].severity == "warning"
    load(root)  # warnings do not block strict loading


def test_isic2020_diagnosis_and_target(tmp_path, good_jpeg):
    root = tmp_path / "isic2020"
    root.mkdir()
    gt = root / "ISIC_2020_Training_GroundTruth.csv"
    gt.write_text(
        "image_name,patient_id,lesion_id,sex,age_approx,anatom_site_general_challenge,diagnosis,"
        "benign_malignant,target\n"
        "ISIC_2637011,IP_7279968,IL_7972535,male,45.0,head/neck,unknown,benign,0\n"
        "ISIC_0015719,IP_3075186,IL_4649854,female,45.0,upper extremity,melanoma,malignant,1\n"
        "ISIC_0052212,IP_2842074,IL_9087444,female,50.0,lower extremity,nevus,benign,0\n")
    write_images(root / "train", ["ISIC_2637011.jpg", "ISIC_0015719.jpg", "ISIC_0052212.jpg"],
                 good_jpeg)
    m = load(f"isic:{gt}")
    assert m.labels == ["benign", "mel", "nv"]
    assert m.table["patient_id"].tolist() == ["IP_7279968", "IP_3075186", "IP_2842074"]


def test_ph2_original_distribution(tmp_path, good_jpeg):
    root = tmp_path / "PH2Dataset"
    root.mkdir()
    (root / "PH2_dataset.txt").write_text(
        "||   Name || Histological Diagnosis || Clinical Diagnosis || Asymmetry | Pigment Network "
        "| Dots/Globules | Streaks | Regression Areas | Blue-Whitish Veil ||  Colors ||\n"
        "|| IMD003 ||                        ||                  0 ||         0 |               T "
        "|             A |       A |                A |                 A ||                4 ||\n"
        "|| IMD410 ||               Melanoma ||                  2 ||         1 |              AT "
        "|            AT |       A |                A |                 A ||             3  4 ||\n"
        "\nLegends for Clinical Diagnosis:\n   0 - Common Nevus;\n")
    for name in ("IMD003", "IMD410"):
        write_images(root / "PH2 Dataset images" / name / f"{name}_Dermoscopic_Image",
                     [f"{name}.bmp"], good_jpeg)
    m = load(root)
    assert m.format == "ph2" and m.labels == ["common_nevus", "mel"]
    t = m.table.set_index("image_id")
    assert t.loc["IMD410", "label_source"] == "histo" and t.loc["IMD003", "label_source"] == "clinical"
    assert t.loc["IMD410", "pigment_network"] == "AT" and t.loc["IMD410", "colors"] == "3  4"
    assert t.loc["IMD003", "lesion_id"] == "IMD003"


def test_folder_layout(tmp_path, good_jpeg):
    write_images(tmp_path / "mel", ["a.jpg", "b.png"], good_jpeg)
    write_images(tmp_path / "nv", ["c.jpeg"], good_jpeg)
    m = load(tmp_path)
    assert m.format == "folder" and sorted(m.labels) == ["mel", "mel", "nv"]
    assert m.problems[0].kind == "no_lesion_id"


def test_csv_manifest_with_named_columns(tmp_path, good_jpeg):
    write_images(tmp_path / "pics", ["x1.jpg", "x2.jpg"], good_jpeg)
    csv = tmp_path / "my.csv"
    csv.write_text("file,diagnosis_text,lesion,extra\npics/x1.jpg,Melanoma,L1,a\n"
                   "pics/x2.jpg,Common Nevus,L2,b\n")
    m = load(f"csv:{csv}", label_col="diagnosis_text")
    assert m.labels == ["mel", "common_nevus"] and m.image_ids == ["x1", "x2"]
    assert m.table["lesion_id"].tolist() == ["L1", "L2"] and m.table["extra"].tolist() == ["a", "b"]
    with pytest.raises(DataError, match="column 'nope'"):
        load(f"csv:{csv}", label_col="nope")


def test_csv_rows_with_trailing_comma(tmp_path, good_jpeg):
    # Excel writes a trailing comma on every data row: pandas would make image_id the index.
    write_images(tmp_path / "pics", [f"x{i}.jpg" for i in range(3)], good_jpeg)
    csv = tmp_path / "excel.csv"
    csv.write_text("image_id,label,lesion_id\n"
                   + "".join(f"x{i},{'mel' if i else 'nv'},L{i},\n" for i in range(3)))
    m = load(f"csv:{csv}", images=tmp_path / "pics")
    assert m.image_ids == ["x0", "x1", "x2"] and m.labels == ["nv", "mel", "mel"]
    assert m.table["lesion_id"].tolist() == ["L0", "L1", "L2"]
    # A trailing comma on the header too: the empty unnamed column is dropped.
    csv.write_text("image_id,label,lesion_id,\nx0,nv,L0,\nx1,mel,L1,\n")
    m = load(f"csv:{csv}", images=tmp_path / "pics")
    assert m.image_ids == ["x0", "x1"] and not any(c.startswith("Unnamed") for c in m.table)
    # An extra field that holds a value is data the header does not name: refused.
    csv.write_text("image_id,label,lesion_id\nx0,nv,L0,\nx1,mel,L1,oops\n")
    with pytest.raises(DataError, match=r"excel\.csv: line 3 has 4 fields but the header names 3"):
        load(f"csv:{csv}", images=tmp_path / "pics")


def test_non_utf8_csv_names_the_line(tmp_path):
    # pandas decodes in chunks: its offset is chunk-relative (it said "offset 1" here).
    rows = ["image_id,label,site"] + [f"ISIC_{i:07d},nv,back" for i in range(80)]
    data = ("\n".join(rows) + "\nISIC_X,nv,\xe9paule\n").encode("latin-1")
    csv = tmp_path / "late.csv"
    csv.write_bytes(data)
    offset = data.index(b"\xe9")
    with pytest.raises(DataError, match=rf"late\.csv: not UTF-8 text \(byte 0xe9 at line 82, "
                                        rf"column 11, byte offset {offset}\)"):
        load(f"csv:{csv}")


def test_isic_ground_truth_without_image_column(tmp_path):
    gt = tmp_path / "gt.csv"
    gt.write_text("name,MEL,NV\nISIC_1,1,0\n")
    with pytest.raises(DataError, match=r"gt\.csv: ISIC ground-truth CSV has no image column "
                                        r"\(expected one of image, .*\); columns found: "
                                        r"name, MEL, NV"):
        load(f"isic:{gt}")


def test_flat_taxonomy_accepts_own_labels(tmp_path, good_jpeg):
    write_images(tmp_path / "class_b", ["a.jpg"], good_jpeg)
    write_images(tmp_path / "class_a", ["b.jpg"], good_jpeg)
    with pytest.raises(DataError, match="not in taxonomy"):
        load(tmp_path)
    assert sorted(load(tmp_path, taxonomy="flat").labels) == ["class_a", "class_b"]


def test_spec_parsing_and_detection(tmp_path):
    assert parse_spec("csv:/a/b.csv") == ("csv", Path("/a/b.csv"))
    assert parse_spec("/a/b.csv") == (None, Path("/a/b.csv"))
    with pytest.raises(DataError, match="no such file"):
        detect_format(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="cannot tell the dataset format"):
        detect_format(tmp_path / "empty")


def test_real_ham10000(ham10000_dir):
    m = load(ham10000_dir)
    assert len(m) == 8017 and m.n_lesions == 5975
    assert set(m.classes) == {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"}
    assert m.table["mask_path"].notna().all()
    assert m.open_image(0).size == (200, 150)


def test_real_ph2(ph2_dir):
    m = load(ph2_dir)
    assert m.class_counts() == {"common_nevus": 80, "atypical_nevus": 80, "mel": 40}
    assert not m.problems  # the two label tables of the copy agree
