"""atomic_write: the old file or the new one, never a torn one, and no temporary left behind."""
from pathlib import Path

import pytest

from dermlearn.atomic import atomic_write


@pytest.mark.parametrize("durable", [True, False])
def test_atomic_write_replaces_or_keeps_the_old_file(tmp_path: Path, durable: bool):
    target = tmp_path / "config.json"
    atomic_write(target, lambda p: p.write_text("old"), durable=durable)
    assert target.read_text() == "old"

    def torn(p: Path) -> None:
        p.write_text("half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, torn, durable=durable)
    assert target.read_text() == "old"
    atomic_write(target, lambda p: p.write_text("new"), durable=durable)
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_output_path_checks_name_the_path_and_the_problem(tmp_path: Path):
    from dermlearn.atomic import OutputPathError, check_output_dir, check_output_file
    from dermlearn.errors import DermlearnError

    folder, afile = tmp_path / "folder", tmp_path / "afile"
    folder.mkdir()
    afile.write_text("x")
    assert check_output_file(tmp_path / "new" / "deeper" / "p.csv") == tmp_path / "new/deeper/p.csv"
    assert check_output_file(afile) == afile            # an existing file is replaced
    assert check_output_dir(folder) == folder
    assert check_output_dir(tmp_path / "new" / "out") == tmp_path / "new" / "out"
    bad = [(check_output_file, folder, "is a folder"),
           (check_output_file, afile / "p.csv", f"{afile} is a file"),
           (check_output_file, afile / "sub" / "p.csv", f"{afile} is a file"),
           (check_output_dir, afile, "is a file"),
           (check_output_dir, afile / "sub", f"{afile} is a file")]
    for check, path, problem in bad:
        with pytest.raises(OutputPathError, match=problem) as info:
            check(path)
        assert str(path) in str(info.value) and isinstance(info.value, DermlearnError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "folder"]  # nothing created
