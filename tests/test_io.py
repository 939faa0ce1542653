"""Atomic writers: nothing half-written on failure, and ordinary file permissions."""

from __future__ import annotations

import stat

import pytest

from eiou import io


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path) -> None:
    path = tmp_path / "out.json"
    io.write_json(path, {"done": True})
    with pytest.raises(RuntimeError), io.atomic_open(path) as handle:
        handle.write("{half")
        raise RuntimeError("killed")
    assert path.read_text().startswith('{\n  "done": true')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_written_files_get_the_permissions_open_gives(tmp_path) -> None:
    """Not mkstemp's private 0600: results are shared on clusters."""
    reference = tmp_path / "reference.txt"
    reference.write_text("x")
    io.write_text(tmp_path / "atomic.txt", "x")
    mode = stat.S_IMODE((tmp_path / "atomic.txt").stat().st_mode)
    assert mode == stat.S_IMODE(reference.stat().st_mode)
