"""Inputs users have (issue 23): a .zip of images read in place, DICOM files, URLs, skipped
files named, symlinked image folders."""
from __future__ import annotations

import json
import os
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermlearn.cli import main
from dermlearn.data import load, sources
from dermlearn.data.images import check_image, dicom_metadata, read_image
from dermlearn.data.readers import folder as folder_reader
from dermlearn.errors import DataError, DermlearnError, ImageDecodeError
from dermlearn.inference.inputs import resolve_inputs


@pytest.fixture(scope="module")
def photos(ph2_dir) -> list[Path]:
    """Six real dermoscopy photos (PH2 JPEGs)."""
    found = sorted((ph2_dir / "images").glob("*.jpg"))[:6]
    if len(found) < 6:
        pytest.skip(f"fewer than 6 PH2 images in {ph2_dir / 'images'}")
    return found


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def _zip(path: Path, members: dict[str, Path | bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            if isinstance(data, Path):
                zf.write(data, name)
            else:
                zf.writestr(name, data)
    return path


@pytest.fixture()
def photos_zip(tmp_path, photos) -> Path:
    """photos.zip: class folders under one top folder, mixed-case extensions, a README, OS
    junk (__MACOSX, .DS_Store)."""
    return _zip(tmp_path / "photos.zip", {
        "photos/nv/a.jpg": photos[0], "photos/nv/b.JPG": photos[1],
        "photos/mel/c.Jpeg": photos[2], "photos/mel/deep/d.jpeg": photos[3],
        "photos/mel/README.txt": b"biopsy-proven melanomas",
        "photos/.DS_Store": b"\0\0", "__MACOSX/photos/nv/._a.jpg": b"\0\0",
    })


# -- a zip of images, read in place ------------------------------------------------------------
def test_zip_dataset_inspect_and_load_read_members_in_place(photos_zip, photos, tmp_path,
                                                            capsys):
    # needs data/loading.py to check files with sources.image_exists (not Path.is_file)
    manifest = load(photos_zip)
    assert manifest.format == "folder" and len(manifest) == 4
    table = manifest.table.set_index("image_id")
    assert table["label"].to_dict() == {"a": "nv", "b": "nv", "c": "mel", "d": "mel"}
    assert table.loc["b", "path"] == f"{photos_zip}/photos/nv/b.JPG"
    assert table.loc["d", "source_row"] == "mel/deep/d.jpeg"
    assert [p.name for p in tmp_path.iterdir()] == ["photos.zip"]  # nothing extracted
    assert _pixels(manifest.open_image(1)).tolist() == _pixels(read_image(photos[1])).tolist()
    assert all(check_image(p) is None for p in manifest.table["path"])

    assert main(["data", "inspect", str(photos_zip), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_images"] == 4 and summary["classes"] == {"mel": 2, "nv": 2}
    skipped = [p for p in summary["problems"] if p["kind"] == "skipped_file"]
    assert [(p["file"], p["message"]) for p in skipped] == [
        (f"{photos_zip}/photos/mel/README.txt",
         "skipped mel/README.txt: not an image file (.txt)")]


def test_zip_member_paths_work_as_image_paths(photos_zip, photos):
    member = f"{photos_zip}/photos/mel/c.Jpeg"
    assert _pixels(read_image(member)).tolist() == _pixels(read_image(photos[2])).tolist()
    assert _pixels(read_image(Path(member))).shape == _pixels(read_image(photos[2])).shape
    assert sources.image_exists(member) and not sources.image_exists(f"{photos_zip}/photos/x.jpg")
    assert not Path(member).is_file()  # which is why loading and caches need image_exists/stat
    assert sources.stat_image(member).st_size == photos[2].stat().st_size
    with pytest.raises(FileNotFoundError):
        sources.stat_image(f"{photos_zip}/photos/nv/none.jpg")
    assert check_image(f"{photos_zip}/photos/nv/none.jpg").startswith("file not found")
    assert check_image(f"{photos_zip}/photos/mel/README.txt").startswith("not a recognised image")


def test_predict_inputs_resolve_a_zip_flat_or_in_folders(tmp_path, photos):
    flat = _zip(tmp_path / "flat.zip", {"x1.jpg": photos[0], "X2.PNG": photos[1],
                                        "notes.txt": b"", ".hidden.jpg": photos[2]})
    resolved = resolve_inputs(str(flat))
    assert resolved.ids == ["x1", "X2"] and resolved.metadata is None
    assert resolved.paths == [f"{flat}/x1.jpg", f"{flat}/X2.PNG"]

    nested = _zip(tmp_path / "nested.zip", {"a/lesion1.jpg": photos[0],
                                            "b/lesion1.jpg": photos[1], "c/z.jpeg": photos[2]})
    resolved = resolve_inputs(nested)
    assert resolved.ids == ["a/lesion1", "b/lesion1", "z"]
    assert all(check_image(p) is None for p in resolved.paths)
    # a member path given as an image file works like a file
    assert resolve_inputs([f"{nested}/c/z.jpeg"]).paths == [f"{nested}/c/z.jpeg"]

    empty = _zip(tmp_path / "empty.zip", {"readme.md": b"nothing here"})
    with pytest.raises(DermlearnError, match="no images in the zip archive"):
        resolve_inputs(empty)


def test_predict_cli_scores_a_zip_in_dataloader_workers(tmp_path, photos, capsys):
    from serving_fixtures import make_tiny_model

    model = make_tiny_model(tmp_path / "model", image_size=64)
    archive = _zip(tmp_path / "photos.zip", {"nv/a.jpg": photos[0], "mel/b.jpg": photos[1],
                                             "c.jpg": photos[2]})
    out = tmp_path / "preds.csv"
    # batch size 1: images are decoded in forked DataLoader workers (the archive was opened
    # in the parent to list it: each worker opens its own)
    assert main(["predict", str(model), str(archive), "--out", str(out), "--backend", "torch",
                 "--quiet", "--batch-size", "1"]) == 0, capsys.readouterr().err
    table = pd.read_csv(out)
    assert table["image"].tolist() == ["a", "b", "c"] and not table.isna().any().any()
    np.testing.assert_allclose(table.drop(columns="image").sum(axis=1), 1.0, atol=1e-4)


def test_zip_slip_members_are_refused(tmp_path, photos):
    evil = _zip(tmp_path / "evil.zip", {"nv/a.jpg": photos[0],
                                        "../outside.jpg": photos[1].read_bytes()})
    with pytest.raises(DataError, match=r"member '\.\./outside\.jpg' .*zip-slip"):
        load(evil)
    with pytest.raises(DataError, match="zip-slip"):
        resolve_inputs(evil)
    with pytest.raises(ImageDecodeError, match="zip-slip"):
        read_image(f"{evil}/../outside.jpg")
    absolute = _zip(tmp_path / "abs.zip", {"nv/a.jpg": photos[0],
                                           "/etc/x.jpg": photos[1].read_bytes()})
    with pytest.raises(DataError, match="absolute path"):
        resolve_inputs(absolute)
    assert not (tmp_path / "outside.jpg").exists()


def test_oversize_zip_member_is_refused_from_the_header(tmp_path, photos, monkeypatch):
    archive = _zip(tmp_path / "big.zip", {"nv/a.jpg": photos[0]})
    size = photos[0].stat().st_size
    monkeypatch.setattr(sources, "MAX_MEMBER_BYTES", size - 1)

    def no_reading(*args, **kwargs):
        raise AssertionError("the member was opened for reading")

    monkeypatch.setattr(zipfile.ZipFile, "open", no_reading)
    with pytest.raises(ImageDecodeError, match=rf"zip member too large: {size:,} bytes "
                                               r"uncompressed > limit .*zip bomb refused"):
        read_image(f"{archive}/nv/a.jpg")


# -- DICOM ------------------------------------------------------------------------------------
def _dicom(path: Path, pixels: np.ndarray, interpretation: str, bits: int, **tags) -> Path:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.pixels import set_pixel_data
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "XC"
    for name, value in tags.items():
        setattr(ds, name, value)
    set_pixel_data(ds, pixels, interpretation, bits)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def photo_rgb(photos) -> np.ndarray:
    pytest.importorskip("pydicom")
    with Image.open(photos[0]) as img:
        return np.asarray(img.convert("RGB").resize((96, 72)))


def test_dicom_rgb_decodes_to_the_source_pixels(tmp_path, photo_rgb):
    from pydicom.pixels import convert_color_space

    rgb = _dicom(tmp_path / "rgb.dcm", photo_rgb, "RGB", 8)
    assert rgb.read_bytes()[128:132] == b"DICM"
    assert _pixels(read_image(rgb)).tolist() == photo_rgb.tolist()
    # the content is sniffed: a DICOM file without the .dcm name, and as raw bytes
    shutil.copyfile(rgb, tmp_path / "export.bin")
    assert _pixels(read_image(tmp_path / "export.bin")).tolist() == photo_rgb.tolist()
    assert _pixels(read_image(rgb.read_bytes())).tolist() == photo_rgb.tolist()
    # YBR_FULL colour is converted back to RGB (rounding: 1 level)
    ybr = _dicom(tmp_path / "ybr.dcm", convert_color_space(photo_rgb, "RGB", "YBR_FULL"),
                 "YBR_FULL", 8)
    assert np.abs(_pixels(read_image(ybr)) - photo_rgb).max() <= 1
    # multi-frame: the first frame
    frames = _dicom(tmp_path / "frames.dcm", np.stack([photo_rgb, photo_rgb[::-1]]), "RGB", 8)
    assert _pixels(read_image(frames)).tolist() == photo_rgb.tolist()
    # the pixel limit holds, from the header
    with pytest.raises(ImageDecodeError, match="image too large: 96x72"):
        read_image(rgb, max_pixels=96 * 72 - 1)
    assert check_image(tmp_path / "rgb.dcm") is None


def test_dicom_monochrome_16_bit_decodes_to_gray(tmp_path, photo_rgb):
    gray = np.asarray(Image.fromarray(photo_rgb).convert("L"))
    mono2 = _dicom(tmp_path / "mono2.dcm", gray.astype(np.uint16) * 257, "MONOCHROME2", 16)
    decoded = _pixels(read_image(mono2))
    assert decoded.shape == (*gray.shape, 3) and decoded[..., 0].tolist() == gray.tolist()
    assert (decoded[..., 0] == decoded[..., 2]).all()
    # 12 bits stored: scaled from 0..4095; MONOCHROME1 is inverted (0 is white)
    twelve = np.rint(gray.astype(np.float64) * 4095 / 255).astype(np.uint16)
    mono1 = _dicom(tmp_path / "mono1.dcm", twelve, "MONOCHROME1", 12)
    assert np.abs(_pixels(read_image(mono1))[..., 1] - (255 - gray.astype(np.int16))).max() <= 1


def test_dicom_metadata_fills_the_manifest(tmp_path, photos, photo_rgb):
    root = tmp_path / "data"
    _dicom(root / "mel" / "m1.dcm", photo_rgb, "RGB", 8, PatientAge="045Y", PatientSex="F",
           BodyPartExamined="UPPER_ARM")
    from pydicom.dataset import Dataset

    region = Dataset()
    region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = "T-D2220", "SRT", \
        "Lower Back"
    _dicom(root / "nv" / "n1.dcm", photo_rgb, "RGB", 8, PatientAge="018M", PatientSex="M",
           BodyPartExamined="BACK", AnatomicRegionSequence=[region])
    (root / "nv").mkdir(exist_ok=True)
    shutil.copyfile(photos[1], root / "nv" / "n2.jpg")

    assert dicom_metadata(root / "mel" / "m1.dcm") == {"age": 45.0, "sex": "female",
                                                       "site": "upper arm"}
    manifest = load(root)
    table = manifest.table.set_index("image_id")
    assert table.loc["m1", ["age", "sex", "site"]].tolist() == [45.0, "female", "upper arm"]
    assert table.loc["n1", ["age", "sex", "site"]].tolist() == [1.5, "male", "lower back"]
    assert table.loc["n2", ["age", "sex", "site"]].isna().all()
    assert _pixels(manifest.open_image(0)).shape == (72, 96, 3)
    # predicting DICOM files hands their metadata to a metadata-fusion model
    resolved = resolve_inputs(sorted(root.rglob("*.*")))
    assert resolved.ids == ["m1", "n1", "n2"]
    assert resolved.metadata["age"].tolist()[:2] == [45.0, 1.5]
    assert np.isnan(resolved.metadata["age"].iloc[2])
    assert resolved.metadata["sex"].tolist() == ["female", "male", None]
    assert resolved.metadata["site"].tolist() == ["upper arm", "lower back", None]


def test_dicom_without_pydicom_says_how_to_install_it(tmp_path, photo_rgb, monkeypatch):
    path = _dicom(tmp_path / "nv" / "a.dcm", photo_rgb, "RGB", 8, PatientSex="F")
    for name in [m for m in sys.modules if m == "pydicom" or m.startswith("pydicom.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pydicom", None)  # import pydicom -> ImportError
    with pytest.raises(ImageDecodeError, match=r"a\.dcm: a DICOM file; .*pydicom.*"
                                               r"dermlearn\[dicom\]"):
        read_image(path)
    with pytest.raises(ImageDecodeError, match=r"dermlearn\[dicom\]"):
        dicom_metadata(path)
    _, problems = folder_reader.read(tmp_path)
    assert any(p.kind == "dicom_unreadable" and "dermlearn[dicom]" in p.message for p in problems)


# -- URLs -------------------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["https://example.org/x.jpg", "http://example.org/photos.zip"])
def test_a_url_says_download_it_first(url, capsys):
    for given in (url, Path(url), [url]):  # Path() collapses '//': still recognised
        with pytest.raises(DataError, match=r"a URL; .*download it first") as info:
            resolve_inputs(given)
        assert url in str(info.value) and "no such file" not in str(info.value)
    with pytest.raises(DataError, match="download it first"):
        sources.refuse_url(Path(url))
    with pytest.raises(DataError, match="download it first"):
        load(url)
    assert sources.refuse_url("C:/photos/x.jpg") is None  # a Windows path is no URL


# -- skipped files ----------------------------------------------------------------------------
def test_skipped_files_in_a_folder_dataset_are_named(tmp_path, photos, capsys):
    root = tmp_path / "data"
    for label, photo in (("nv", photos[0]), ("mel", photos[1])):
        (root / label).mkdir(parents=True)
        shutil.copyfile(photo, root / label / f"{label}1.jpg")
    (root / "nv" / "README.txt").write_text("dermoscopy, 2024")
    (root / "nv" / "anim.gif").write_bytes(b"GIF89a")
    (root / "mel" / "scan").write_bytes(b"no extension")
    (root / "loose.jpg").write_bytes(photos[2].read_bytes())
    (root / "nv" / ".DS_Store").write_bytes(b"\0")
    (root / "mel" / "Thumbs.db").write_bytes(b"\0")
    (root / ".git").mkdir()
    (root / ".git" / "x.jpg").write_bytes(photos[3].read_bytes())

    manifest = load(root)
    assert sorted(manifest.image_ids) == ["mel1", "nv1"]
    skipped = {Path(p.file).relative_to(root).as_posix(): p.message
               for p in manifest.problems if p.kind == "skipped_file"}
    assert skipped == {
        "loose.jpg": "skipped loose.jpg: image outside any class folder (its class is unknown)",
        "mel/scan": "skipped mel/scan: not an image file (no extension)",
        "nv/README.txt": "skipped nv/README.txt: not an image file (.txt)",
        "nv/anim.gif": "skipped nv/anim.gif: image type .gif is not supported (convert it to "
                       "JPEG or PNG)",
    }
    assert all(p.severity == "warning" for p in manifest.problems)

    assert main(["data", "inspect", str(root)]) == 0
    out = capsys.readouterr().out
    assert "0 error(s), 5 warning(s)" in out and "nv/anim.gif" in out and "README.txt" in out


# -- symbolic links ---------------------------------------------------------------------------
def test_isic_ground_truth_finds_images_in_a_symlinked_folder(tmp_path, photos):
    store = tmp_path / "store" / "ISIC_images"
    store.mkdir(parents=True)
    ids = [f"ISIC_00000{i}" for i in range(3)]
    for image_id, photo in zip(ids, photos):
        shutil.copyfile(photo, store / f"{image_id}.jpg")
    dataset = tmp_path / "isic"
    dataset.mkdir()
    (dataset / "GroundTruth.csv").write_text(
        "image,MEL,NV\n" + "".join(f"{i},{int(k == 0)},{int(k != 0)}\n"
                                   for k, i in enumerate(ids)))
    os.symlink(store, dataset / "images", target_is_directory=True)
    os.symlink(dataset, store / "loop", target_is_directory=True)  # a link loop: walked once

    manifest = load(dataset)
    assert manifest.format == "isic" and manifest.labels == ["mel", "nv", "nv"]
    assert [Path(p).parent for p in manifest.table["path"]] == [dataset / "images"] * 3
    assert not [p for p in manifest.problems if p.kind in ("missing_file", "duplicate_file")]


def test_folder_dataset_follows_symlinked_folders(tmp_path, photos):
    store = tmp_path / "store"
    for folder, photo in (("melanomas", photos[0]), ("more_nevi", photos[2])):
        (store / folder).mkdir(parents=True)
        shutil.copyfile(photo, store / folder / f"{folder}1.jpg")
    (tmp_path / "data" / "nv").mkdir(parents=True)
    shutil.copyfile(photos[1], tmp_path / "data" / "nv" / "n.jpg")
    os.symlink(store / "melanomas", tmp_path / "data" / "mel", target_is_directory=True)
    os.symlink(store / "more_nevi", tmp_path / "data" / "nv" / "batch2", target_is_directory=True)
    os.symlink(tmp_path / "data", tmp_path / "data" / "nv" / "back", target_is_directory=True)
    manifest = load(tmp_path / "data")
    assert dict(zip(manifest.image_ids, manifest.labels)) == {
        "melanomas1": "mel", "more_nevi1": "nv", "n": "nv"}
    assert [p.kind for p in manifest.problems] == ["no_lesion_id"]
