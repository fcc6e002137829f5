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


def test_read_only_folders_are_one_line_and_exit_2_before_any_work(tmp_path):
  """A workdir, --data_dir and --output_dir on a read-only file system (a tmpfs remounted
  read-only: root, who writes through permissions, cannot write there either). evaluate.py
  used to fail only after the whole evaluation had run."""
  from tests.conftest import run_side_by_side, tmpfs  # pylint: disable=g-import-not-at-top
  disk = tmp_path / "read_only"
  # The workdir is refused before its checkpoints or data would be read.
  with tmpfs(disk, "16m", then_read_only=lambda path: (path / "work").mkdir()):
    results = run_side_by_side({
        "evaluate": ["evaluate.py", "--config", "configs/test.py", "--workdir",
                     str(disk / "work")],
        "prepare": ["-m", "gio_ada_jax.data.prepare", "--dataset", "procedural", "--config",
                    "configs/test.py", "--data_dir", str(disk / "data")],
        "compare": ["evaluate.py", "compare", str(disk / "work"), "--output_dir",
                    str(disk / "tables")]})
  expected = {
      "evaluate": f"evaluate.py: {disk}/work/eval (where the reports go): this user cannot "
                  f"write into {disk}/work; give a folder it can.",
      "prepare": f"prepare: cannot write {disk}/data/procedural/source/prepare.lock: Read-only "
                 "file system. Give a --data_dir that this user can write.",
      "compare": f"evaluate.py: --output_dir {disk}/tables: cannot create that folder (Read-only "
                 "file system); give one this user can write."}
  for name, said in expected.items():
    status, out, err = results[name]
    assert (status, err.strip().splitlines()[-1]) == (2, said), (name, err[-2000:])
  assert "evaluating" not in results["evaluate"][2]  # refused before the evaluation ran
