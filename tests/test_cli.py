"""The console script on real data, as a user runs it."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from dermlearn.cli import build_parser, main
from dermlearn.errors import DermlearnError


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dermlearn.cli", *args], capture_output=True,
                          text=True, timeout=120)


def test_inspect_ham10000_json(ham10000_dir):
    result = run_cli("data", "inspect", str(ham10000_dir), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["n_images"] == 8017 and summary["n_lesions"] == 5975
    assert set(summary["classes"]) == {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"}
    assert summary["problems"] == []


def test_inspect_ph2_text(ph2_dir, capsys):
    assert main(["data", "inspect", str(ph2_dir)]) == 0
    out = capsys.readouterr().out
    assert "images: 200" in out
    for label, n in [("common_nevus", 80), ("atypical_nevus", 80), ("mel", 40)]:
        assert any(line.split()[:2] == [label, str(n)] for line in out.splitlines())


def test_bad_path_exits_cleanly(tmp_path):
    result = run_cli("data", "inspect", str(tmp_path / "missing"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no such file or folder" in result.stderr


def test_taxonomy_show_with_partition(ph2_dir, capsys):
    assert main(["taxonomy", "show", "--data", str(ph2_dir), "--max-class-size", "100"]) == 0
    out = capsys.readouterr().out
    assert "training classes" in out and "common_nevus" in out


# -- bad input: output paths, numeric flags, unreadable images, --set values -------------------
BAD = Path(__file__).parent / "data" / "bad"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny model, a labelled folder dataset and a photo folder with one corrupt image."""
    from serving_fixtures import make_tiny_model

    root = tmp_path_factory.mktemp("cli-bad-input")
    make_tiny_model(root / "model", image_size=64)
    for label, names in {"nv": ["n1", "n2"], "mel": ["m1", "m2"]}.items():
        (root / "data" / label).mkdir(parents=True)
        for name in names:
            shutil.copyfile(BAD / "good.jpg", root / "data" / label / f"{name}.jpg")
    (root / "photos").mkdir()
    for name in ("a", "b", "d"):
        shutil.copyfile(BAD / "good.jpg", root / "photos" / f"{name}.jpg")
    shutil.copyfile(BAD / "corrupt.jpg", root / "photos" / "c.jpg")
    return root


@pytest.fixture()
def places(tmp_path):
    (tmp_path / "emptydir").mkdir()
    (tmp_path / "afile").write_text("keep me")
    return tmp_path


@pytest.mark.parametrize("command, out, problem", [
    ("predict MODEL PHOTOS", "emptydir", "is a folder"),
    ("predict MODEL PHOTOS", "afile/p.csv", "afile is a file"),
    ("predict MODEL PHOTOS --devices 2", "emptydir", "is a folder"),
    ("data split DATA --folds 2", "emptydir", "is a folder"),
    ("export MODEL", "emptydir", "is a folder"),
    ("evaluate MODEL DATA", "afile", "is a file"),
    ("evaluate --predictions p.csv DATA", "afile", "is a file"),
    ("embed MODEL DATA", "afile", "is a file"),
    ("explain MODEL PHOTOS/a.jpg", "afile", "is a file"),
    ("demo", "afile", "is a file"),
])
def test_output_path_errors_come_before_the_work(tiny, places, monkeypatch, capsys, command,
                                                 out, problem):
    from dermlearn.inference.backends import OnnxBackend
    from dermlearn.inference.predictor import Predictor

    def no_work(*args, **kwargs):
        raise AssertionError("predicted before checking --out")

    monkeypatch.setattr(Predictor, "run_batch", no_work)
    monkeypatch.setattr(OnnxBackend, "run_batch", no_work)
    argv = [str(tiny / "model") if a == "MODEL" else str(tiny / "data") if a == "DATA" else
            a.replace("PHOTOS", str(tiny / "photos")) for a in command.split()]
    assert main([*argv, "--out", str(places / out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dermlearn: error: ") and str(places / out) in err and problem in err
    assert (places / "afile").read_text() == "keep me" and not any((places / "emptydir").iterdir())


@pytest.mark.parametrize("argv, message", [
    ("predict M x --threads -1", "--threads: expected a number of threads >= 1 (or 0"),
    ("predict M x --batch-size 0", "--batch-size: expected a positive integer, got 0"),
    ("predict M x --batch-size two", "--batch-size: expected a positive integer, got 'two'"),
    ("serve M --threads -1", "--threads: expected a number of threads >= 1 (or 0"),
    ("serve M --max-batch 0", "--max-batch: expected a positive integer, got 0"),
    ("serve M --workers 0", "--workers: expected a positive integer, got 0"),
])
def test_bad_numbers_are_refused_by_the_parser(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv.split())
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_threads_zero_still_means_all_cores():
    args = build_parser().parse_args("predict M x --threads 0 --batch-size 1".split())
    assert args.threads == 0 and args.batch_size == 1


def test_bad_numbers_and_keep_uploads_are_refused_by_the_python_api(tiny, places):
    from dermlearn.atomic import OutputPathError
    from dermlearn.inference import predict
    from dermlearn.inference.backends import TorchBackend, create_backend
    from dermlearn.inference.predictor import Predictor
    from dermlearn.serving.server import serve

    photos = str(tiny / "photos" / "a.jpg")
    with pytest.raises(DermlearnError, match="batch size must be a positive integer, got 0"):
        predict(tiny / "model", photos, batch_size=0)
    with pytest.raises(DermlearnError, match="threads must be 0 .* got -1"):
        predict(tiny / "model", photos, threads=-1)
    with pytest.raises(DermlearnError, match="threads must be 0 .* got -1"):
        TorchBackend(Predictor.load(tiny / "model"), threads=-1)
    with pytest.raises(DermlearnError, match="threads must be 0 .* got -1"):
        create_backend(tiny / "model", "auto", threads=-1)
    with pytest.raises(DermlearnError, match="--max-batch must be a positive integer, got 0"):
        serve(tiny / "model", max_batch=0)
    with pytest.raises(DermlearnError, match="threads must be 0 .* got -1"):
        serve(tiny / "model", threads=-1)
    with pytest.raises(OutputPathError, match="afile: is a file"):
        serve(tiny / "model", keep_uploads=places / "afile")


@pytest.mark.parametrize("batch_size", ["32", "1"])  # 1: decoded in DataLoader workers
def test_predict_writes_every_readable_image_then_names_the_unreadable(tiny, tmp_path, capsys,
                                                                       batch_size):
    out = tmp_path / "sub" / "preds.csv"
    assert main(["predict", str(tiny / "model"), str(tiny / "photos"), "--out", str(out),
                 "--backend", "torch", "--quiet", "--batch-size", batch_size]) == 1
    table = pd.read_csv(out)
    assert table["image"].tolist() == ["a", "b", "d"] and not table.isna().any().any()
    captured = capsys.readouterr()
    assert f"wrote {out}: 3 images" in captured.out
    assert "1 of 4 images could not be read" in captured.err
    assert str(tiny / "photos" / "c.jpg") in captured.err and "Traceback" not in captured.err


def test_predict_api_keeps_the_readable_rows_in_the_error(tiny):
    import numpy as np

    from dermlearn.inference import UnreadableImagesError, predict

    with pytest.raises(UnreadableImagesError) as info:
        predict(tiny / "model", tiny / "photos", level="malignant_vs_benign")
    error = info.value
    assert [p for p, _ in error.unreadable] == [str(tiny / "photos" / "c.jpg")]
    assert error.table["image"].tolist() == ["a", "b", "d"]
    good = predict(tiny / "model", [tiny / "photos" / f"{n}.jpg" for n in "abd"],
                   level="malignant_vs_benign")
    np.testing.assert_allclose(error.table.drop(columns="image").to_numpy(),
                               good.drop(columns="image").to_numpy())


def test_predict_refuses_an_unknown_level_before_scoring(tiny, monkeypatch):
    from dermlearn.inference import Predictor, predict

    monkeypatch.setattr(Predictor, "run_batch", lambda *a, **k: pytest.fail("scored"))
    with pytest.raises(DermlearnError, match="unknown level 'nosuch'"):
        predict(tiny / "model", tiny / "photos", level="nosuch")


def test_set_values_that_are_not_yaml_are_named(tmp_path, capsys):
    code = main(["train", str(tmp_path), "--out", str(tmp_path / "run"), "--set",
                 "image_size=[64,"])
    err = capsys.readouterr().err
    assert code == 2 and "--set value '[64,' is not valid YAML" in err


def test_resume_refuses_options_it_would_ignore(tmp_path, capsys):
    code = main(["train", "--resume", str(tmp_path / "run"), "--epochs", "3", "--set", "lr=1",
                 "--splits", "s.csv"])
    err = capsys.readouterr().err
    assert code == 2 and "drop --epochs, --set, --splits" in err


def test_config_and_recipe_are_one_or_the_other(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("epochs: 1\n")
    code = main(["train", str(tmp_path), "--out", str(tmp_path / "run"), "--recipe",
                 "esteva2017", "--config", str(tmp_path / "c.yaml")])
    assert code == 2 and "not both" in capsys.readouterr().err
