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
