"""The command line's surface (issue 23): every option described with its default, one default
per option name across commands, clean printed paths, and quiet ends on a closed pipe."""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dermlearn.cli import build_parser, main
from dermlearn.training.recipes import Recipe

#: Options whose default differs between commands on purpose: option -> why.
DIFFERENT_DEFAULTS = {
    "--out": "names a different file or folder per command (predictions.csv, splits.csv, "
             "demo-out, model-report.md), or none where it is required or print-only",
    "--folds": "data split writes K folds (5, for cross-validation); train's --folds trains K "
               "fold models (the recipe's 1: one model)",
    "--max-class-size": "taxonomy show previews Esteva's partitioning, so it needs a threshold "
                        "(1000, the paper's); train and demo partition only when asked (None: "
                        "one class per diagnosis)",
    "--bootstrap": "the library's defaults (evaluate_model 1000, compare_evaluations 2000): "
                   "compare's paired p-values need the finer resolution; the documented "
                   "figures were made with these",
}
#: (command, option) whose default is None = "not given", so that the command can refuse it
#: where it cannot apply; the help states the default used otherwise: why.
NOT_GIVEN = {
    ("train", "--taxonomy"): "refused with --resume (a run keeps its own taxonomy)",
    ("evaluate", "--taxonomy"): "for --predictions only: refused with a MODEL, which reads the "
                                "data with the taxonomy it was trained with",
}
#: A default stated by hand in a help text ("default |" is a choice named default).
HAND_WRITTEN = re.compile(r"\(default|default\)|\bdefault [^|]")
NOT_DESCRIBED = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)


def _commands(parser: argparse.ArgumentParser,
              path: tuple[str, ...] = ()) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """("data split", its parser) for the parser and every subcommand's, recursively."""
    yield " ".join(path), parser
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        for name, sub in action.choices.items():
            yield from _commands(sub, (*path, name))


def _options() -> Iterator[tuple[str, argparse.ArgumentParser, argparse.Action]]:
    """(command, its parser, action) for every argument of every command but -h and --version."""
    for command, parser in _commands(build_parser()):
        for action in parser._actions:
            if not isinstance(action, NOT_DESCRIBED):
                yield command, parser, action


def _name(action: argparse.Action) -> str:
    return max(action.option_strings, key=len) if action.option_strings else action.dest


def _shown_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The action's help as ``--help`` prints it, on one line."""
    return " ".join(parser._get_formatter()._expand_help(action).split())


def test_the_walk_reaches_every_command():
    commands = {command for command, _ in _commands(build_parser())}
    assert {"data inspect", "data split", "data download", "taxonomy show", "train", "predict",
            "serve", "export", "evaluate", "explain", "embed", "compare", "report", "ensemble",
            "demo"} <= commands


def test_every_option_has_help_and_shows_its_default():
    undescribed, without_default, twice = [], [], []
    for command, parser, action in _options():
        where = f"{command} {_name(action)}"
        if not (action.help or "").strip() or action.help == argparse.SUPPRESS:
            undescribed.append(where)
            continue
        shown = _shown_help(parser, action)
        default = action.default
        if default is argparse.SUPPRESS and action.dest in Recipe.model_fields:
            default = Recipe.model_fields[action.dest].default  # a recipe flag: the recipe's
            if default is not None and default is not False and "(default: " not in shown:
                without_default.append(f"{where}: {shown!r}")
        elif default is not None and default is not False and default != []:
            if not shown.endswith(f"(default: {default})"):
                without_default.append(f"{where}: {shown!r}")
        rest = shown[:shown.rfind("(default: ")] if "(default: " in shown else shown
        if HAND_WRITTEN.search(rest):  # e.g. "(default 5)", "auto (default)", "default auto"
            twice.append(f"{where}: {shown!r}")
    assert undescribed == [], "options without help"
    assert without_default == [], "defaults not shown as (default: X)"
    assert twice == [], "defaults stated by hand besides (default: X)"


def test_no_none_or_false_defaults_in_help():
    for command in ("", "data split", "taxonomy show", "train", "predict", "serve", "evaluate",
                    "explain", "embed", "compare", "report", "demo"):
        parser = dict(_commands(build_parser()))[command]
        text = parser.format_help()
        for noise in ("None", "none", "False", "off", "[]"):
            assert f"(default: {noise})" not in text, (command, noise)
        assert "==SUPPRESS==" not in text, command


def test_one_default_per_option_across_commands():
    defaults: dict[str, dict[str, object]] = defaultdict(dict)
    for command, parser, action in _options():
        if not action.option_strings:
            continue
        name, default = _name(action), action.default
        if default is argparse.SUPPRESS and action.dest in Recipe.model_fields:
            default = Recipe.model_fields[action.dest].default  # train's recipe flags
        if (command, name) in NOT_GIVEN:
            assert default is None, (command, name)
            assert _shown_help(parser, action).endswith("(default: dermatology)"), (command, name)
            continue
        defaults[name][command] = default
    differing = {name: by_command for name, by_command in defaults.items()
                 if len({repr(v) for v in by_command.values()}) > 1}
    assert {name: by_command for name, by_command in differing.items()
            if name not in DIFFERENT_DEFAULTS} == {}
    assert set(DIFFERENT_DEFAULTS) <= set(differing), "an exception no longer needed"
    for (_, name) in NOT_GIVEN:
        assert {repr(v) for v in defaults[name].values()} == {"'dermatology'"}


def test_serve_and_predict_choose_the_backend_alike():
    parser = build_parser()
    assert parser.parse_args(["serve", "M"]).backend == "auto"
    assert parser.parse_args(["predict", "M", "x"]).backend == "auto"


def test_serve_auto_resolves_as_predict(tmp_path, monkeypatch):
    """serve(backend="auto") hands the service a concrete engine: ONNX Runtime when installed
    (the export made once, before the workers), PyTorch when the export cannot be made."""
    import uvicorn

    from dermlearn.inference import backends, onnx_export
    from dermlearn.serving import server

    from serving_fixtures import make_tiny_model

    model = make_tiny_model(tmp_path / "model", image_size=64)
    started = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.append(app))
    monkeypatch.setattr("dermlearn.serving.app.create_app", lambda config: config)
    monkeypatch.setattr(onnx_export, "ensure_onnx", lambda model_dir, *a: tmp_path / "m.onnx")
    monkeypatch.setattr(backends, "onnxruntime_available", lambda: True)
    assert server.serve(model, backend="auto") == 0
    assert started[-1].backend == "onnx" and started[-1].onnx_path == str(tmp_path / "m.onnx")

    def no_export(*args):
        raise RuntimeError("cannot export")

    monkeypatch.setattr(onnx_export, "ensure_onnx", no_export)
    assert server.serve(model, backend="auto") == 0
    assert started[-1].backend == "torch" and started[-1].onnx_path is None
    with pytest.raises(RuntimeError, match="cannot export"):  # asked for onnx: no fallback
        server.serve(model, backend="onnx")
    monkeypatch.setattr(backends, "onnxruntime_available", lambda: False)
    assert server.serve(model, backend="auto") == 0
    assert started[-1].backend == "torch"


# -- printed paths ---------------------------------------------------------------------------
@pytest.fixture()
def predictions(tmp_path) -> Path:
    """Two predictions CSVs of the same 30 images and their ISIC truth CSV."""
    rng = np.random.default_rng(0)
    ids = [f"ISIC_{i:07d}" for i in range(30)]
    truth = pd.DataFrame(np.eye(3)[np.arange(30) % 3], columns=["MEL", "NV", "BCC"])
    truth.insert(0, "image", ids)
    truth.to_csv(tmp_path / "truth.csv", index=False)
    for name in ("a", "b"):
        preds = pd.DataFrame(rng.dirichlet(np.ones(3), 30), columns=["mel", "nv", "bcc"])
        preds.insert(0, "image", ids)
        preds.to_csv(tmp_path / f"{name}.csv", index=False)
    return tmp_path


def test_printed_paths_have_no_doubled_slash(predictions, capsys):
    root = str(predictions)
    for name in ("a", "b"):
        assert main(["evaluate", "--predictions", f"{root}/{name}.csv", f"{root}/truth.csv",
                     "--out", f"{root}/eval-{name}/", "--bootstrap", "10"]) == 0
    said = capsys.readouterr().out
    assert f"metrics: {root}/eval-a/metrics.json   report: {root}/eval-a/report.html" in said
    assert main(["compare", f"{root}/eval-a/", f"{root}/eval-b/", "--out", f"{root}/cmp/",
                 "--bootstrap", "10"]) == 0
    said += capsys.readouterr().out
    assert f"wrote {root}/cmp/comparison.json" in said and f"--compare {root}/cmp)" in said
    assert "//" not in said


# -- a reader that leaves early (`dermlearn ... | head -1`) ----------------------------------
def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "dermlearn.cli", *args]


def _env(unbuffered: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return {**env, "PYTHONUNBUFFERED": "1"} if unbuffered else env


@pytest.fixture(scope="module")
def long_outputs(tmp_path_factory) -> Path:
    """Inputs whose output is far longer than a pipe's buffer: a taxonomy of 4,000 diagnoses,
    and a manifest of 3,000 missing images of 3,000 classes (read with --taxonomy flat: a line
    per class in the text, a problem each in the JSON; the text summarises the problems)."""
    root = tmp_path_factory.mktemp("long-output")
    nodes = [{"id": f"diagnosis_{i:05d}", "name": f"Diagnosis number {i}"} for i in range(4000)]
    (root / "wide.json").write_text(json.dumps(
        {"name": "wide", "root": {"id": "root", "name": "Root"}, "nodes": nodes}))
    (root / "manifest.csv").write_text(
        "image,label\n" + "".join(f"missing_{i:05d}.jpg,class_{i:05d}\n" for i in range(3000)))
    return root


@pytest.mark.parametrize("unbuffered", [True, False], ids=["unbuffered", "buffered"])
@pytest.mark.parametrize("args", [("taxonomy", "show", "--taxonomy", "LONG/wide.json"),
                                  ("data", "inspect", "LONG/manifest.csv", "--taxonomy", "flat"),
                                  ("data", "inspect", "LONG/manifest.csv", "--json")],
                         ids=["taxonomy-show", "data-inspect", "data-inspect-json"])
def test_a_reader_leaving_after_one_line_ends_quietly(long_outputs, args, unbuffered):
    argv = [a.replace("LONG", str(long_outputs)) for a in args]
    process = subprocess.Popen(_command(*argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=_env(unbuffered))
    first = process.stdout.readline()
    process.stdout.close()  # as `head -1` does, with most of the output still to come
    _, err = process.communicate(timeout=120)
    assert first.strip()
    assert b"Traceback" not in err and b"BrokenPipeError" not in err, err.decode()[-2000:]
    assert process.returncode == 141  # 128 + SIGPIPE, as `yes | head -1`


@pytest.mark.parametrize("unbuffered", [True, False], ids=["unbuffered", "buffered"])
def test_a_reader_gone_before_any_output_ends_quietly(unbuffered):
    """``dermlearn taxonomy show | true``: the built-in tree's short output meets a pipe whose
    reader is already closed (buffered: in the last flush)."""
    read_end, write_end = os.pipe()
    process = subprocess.Popen(_command("taxonomy", "show"), stdout=write_end,
                               stderr=subprocess.PIPE, env=_env(unbuffered))
    os.close(write_end)
    os.close(read_end)
    _, err = process.communicate(timeout=120)
    assert b"Traceback" not in err and b"BrokenPipeError" not in err, err.decode()[-2000:]
    assert process.returncode == 141
