"""The console script on real data, as a user runs it."""
from __future__ import annotations

import json
import subprocess
import sys

from dermlearn.cli import main


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
