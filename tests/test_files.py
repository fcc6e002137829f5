"""files.atomic_write: a file appears complete under its name or not at all."""

import os

import pytest

from gio_ada_jax import files


def test_writes_text_bytes_and_writer_output_creating_the_folder(tmp_path):
  files.atomic_write(str(tmp_path / "a" / "t.md"), "héllo\n")
  files.atomic_write(str(tmp_path / "b.bin"), b"\x00\x01")
  files.atomic_write(str(tmp_path / "c.txt"), lambda f: f.write(b"from a writer"))
  assert (tmp_path / "a" / "t.md").read_text(encoding="utf-8") == "héllo\n"
  assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
  assert (tmp_path / "c.txt").read_bytes() == b"from a writer"
  assert sorted(os.listdir(tmp_path)) == ["a", "b.bin", "c.txt"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
  path = tmp_path / "report.json"
  path.write_text("old")

  def half_then_fail(f):
    f.write(b"half")
    raise OSError("disk full")

  with pytest.raises(OSError, match="disk full"):
    files.atomic_write(str(path), half_then_fail)
  assert path.read_text() == "old"
  assert os.listdir(tmp_path) == ["report.json"]


def test_the_temporary_name_is_unique_and_recognised(tmp_path, monkeypatch):
  seen = []
  real_replace = os.replace
  monkeypatch.setattr(os, "replace", lambda a, b: (seen.append(os.path.basename(a)),
                                                   real_replace(a, b)))
  files.atomic_write(str(tmp_path / "x.png"), b"1")
  files.atomic_write(str(tmp_path / "x.png"), b"2")
  assert len(set(seen)) == 2
  assert all(files.is_temporary_of(name, "x.png") for name in seen)
  assert files.is_temporary_of("x.png.tmp", "x.png")  # an older version's name
  assert not files.is_temporary_of("x.png", "x.png")
  assert not files.is_temporary_of("y.png.tmp", "x.png")
