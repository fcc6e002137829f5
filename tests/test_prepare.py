"""What an interrupted prepare leaves (data/prepare.py, data/interrupts.py): nothing unfinished
for long, whether it was killed or stopped by SIGTERM."""

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest



# --------------------------------------------------------- what an interrupted prepare leaves


def test_the_next_prepare_removes_only_the_unfinished_copy_a_killed_one_left(
    procedural_data_dir, tmp_path, capsys):
  """A prepare killed by SIGKILL leaves TFDS's incomplete.* folder (named here by TFDS's own
  function); the next prepare of that dataset version removes it, and nothing else."""
  from configs import test  # pylint: disable=g-import-not-at-top
  from gio_ada_jax.data import pipeline, prepare  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.core.utils import file_utils  # pylint: disable=g-import-not-at-top
  data_dir = tmp_path / "data"
  shutil.copytree(procedural_data_dir, data_dir)  # complete: prepare writes nothing new
  version = pipeline.dataset_dir(str(data_dir), "procedural/source")
  # pylint: disable-next=protected-access
  left = pathlib.Path(file_utils._get_incomplete_dir(str(version)))
  (left / "procedural-train.array_record-00000-of-00001").parent.mkdir(parents=True)
  (left / "procedural-train.array_record-00000-of-00001").write_bytes(b"half")
  kept = [version.parent / "incomplete.ABC123_1.0.0",  # another version's: not ours to judge
          version.parent / "incomplete.notes", version.parent / "my_data",
          data_dir / "procedural" / f"incomplete.ABC123_{version.name}"]  # not beside it
  for path in kept:
    path.mkdir()
  a_file = version.parent / f"incomplete.XYZ789_{version.name}"
  a_file.write_text("a file, not TFDS's folder")
  a_link = version.parent / f"incomplete.LINK00_{version.name}"
  a_link.symlink_to(kept[2], target_is_directory=True)
  (version / "dataset_info.json").rename(tmp_path / "dataset_info.json")  # as if not prepared
  with pytest.raises(pipeline.DatasetNotPrepared, match="no dataset_info.json; a prepare that is "
                     f"running or was interrupted left {left.name}"):
    pipeline.open_split(str(data_dir), "procedural/source", "train")
  (tmp_path / "dataset_info.json").rename(version / "dataset_info.json")
  prepare.prepare("procedural", str(data_dir), test.get_config(), num_workers=1)
  assert not left.exists()
  assert f"Removed {left}: an unfinished copy of {version}" in capsys.readouterr().out
  assert all(p.is_dir() for p in kept) and a_file.is_file() and a_link.is_symlink()
  pipeline.open_split(str(data_dir), "procedural/source", "train")  # still complete


def test_sigterm_stops_prepare_after_tfds_removed_its_unfinished_copy(tmp_path):
  data_dir = tmp_path / "data"
  process = subprocess.Popen(
      [sys.executable, "-m", "gio_ada_jax.data.prepare", "--dataset", "procedural", "--config",
       "configs/test.py", "--data_dir", str(data_dir), "--num_workers", "1",
       "--config.data.procedural.num_train=5000"],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env={**os.environ, "JAX_THREEFRY_PARTITIONABLE": "false"})
  source = data_dir / "procedural" / "source"
  deadline = time.monotonic() + 300
  while not list(source.glob("incomplete.*")) and process.poll() is None:
    assert time.monotonic() < deadline, "prepare never started writing"
    time.sleep(0.1)
  time.sleep(1)  # rendering the 5000 examples, not starting (tqdm's own start is not clean)
  process.send_signal(signal.SIGTERM)
  _, err = process.communicate(timeout=120)
  assert process.returncode == 75, err[-3000:]  # as every command stopped by SIGTERM
  assert err.endswith("prepare: stopped by SIGTERM before the data being written was complete "
                      "(exit status 75); rerun the same command to resume.\n")
  assert "Traceback" not in err
  assert sorted(p.name for p in source.iterdir()) == []  # neither a copy nor its temporary


def test_a_sigterm_whose_exception_python_dropped_or_deferred_still_stops_the_writer():
  """Python drops what a signal handler raises inside a __del__ or a gc callback (TensorFlow
  has those); the writers' check between examples raises it again. Around starting worker
  processes it is raised once they all are started."""
  from gio_ada_jax.data import interrupts  # pylint: disable=g-import-not-at-top

  class SignalsOnDelete:
    def __del__(self):
      os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here; its exception is dropped

  before = signal.getsignal(signal.SIGTERM)
  with pytest.raises(interrupts.Terminated):
    with interrupts.terminated_on_sigterm():
      obj = SignalsOnDelete()
      del obj  # survives: only "Exception ignored in ... __del__" on stderr
      with pytest.raises(interrupts.Terminated):
        interrupts.check_terminated()  # what builders' _record does between examples
      with interrupts.sigterm_deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        started = True  # not interrupted inside
      pytest.fail("sigterm_deferred did not raise at its end")
  assert started
  assert signal.getsignal(signal.SIGTERM) == before  # restored
  interrupts.check_terminated()  # nothing pending after the writer stopped


# ------------------------------------------------------------- one prepare per dataset folder

HOLD_LOCK = """
import sys, time
from gio_ada_jax.data import prepare
with prepare.dataset_folder_lock(sys.argv[1]):
  print("held", flush=True)
  time.sleep(600)
"""


def _lock_holder(folder):
  """A process holding `folder`'s prepare lock (as a prepare does while it writes)."""
  process = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder)],
                             stdout=subprocess.PIPE, text=True)
  assert process.stdout.readline() == "held\n"
  return process


def test_a_second_prepare_is_refused_and_leaves_the_first_ones_copy(procedural_data_dir, tmp_path):
  """While one prepare writes a dataset folder (its lock, TFDS's incomplete.* copy), another
  prepare of that folder is refused naming the writer, and removes nothing; once the writer is
  gone (here killed: the kernel drops its lock), the next prepare goes ahead."""
  from configs import test  # pylint: disable=g-import-not-at-top
  from gio_ada_jax.data import formats, pipeline, prepare  # pylint: disable=g-import-not-at-top
  data_dir = tmp_path / "data"
  shutil.copytree(procedural_data_dir, data_dir)
  version = pipeline.dataset_dir(str(data_dir), "procedural/source")
  shutil.rmtree(version)  # the first prepare has not finished writing it...
  being_written = version.parent / f"incomplete.ABC123_{version.name}"  # ...into TFDS's folder
  being_written.mkdir()
  writer = _lock_holder(version.parent)
  try:
    with pytest.raises(formats.DataError, match=(
        f"{version.parent} is being written by another prepare: process {writer.pid} on .* "
        f"holds {version.parent / prepare.PREPARE_LOCK}. Wait for it to end")):
      prepare.prepare("procedural", str(data_dir), test.get_config(), num_workers=1)
    assert being_written.is_dir()
  finally:
    writer.kill()
    writer.wait()
  assert (version.parent / prepare.PREPARE_LOCK).exists()  # a killed holder leaves the file...
  prepare.prepare("procedural", str(data_dir), test.get_config(), num_workers=1)  # ...unlocked
  assert not being_written.exists()  # now an interrupted prepare's leftover, removed
  pipeline.open_split(str(data_dir), "procedural/source", "train")
  assert not (version.parent / prepare.PREPARE_LOCK).exists()  # released: removed


def test_the_prepare_lock_is_one_holder_at_a_time_and_released_on_error(tmp_path):
  from gio_ada_jax.data import formats, prepare  # pylint: disable=g-import-not-at-top
  folder = tmp_path / "dataset"
  with prepare.dataset_folder_lock(folder):
    with pytest.raises(formats.DataError, match=f"process {os.getpid()} on "):
      with prepare.dataset_folder_lock(folder):
        pass
  with pytest.raises(RuntimeError, match="writing failed"):
    with prepare.dataset_folder_lock(folder):
      raise RuntimeError("writing failed")
  assert list(folder.iterdir()) == []
  with prepare.dataset_folder_lock(folder):  # free again
    pass
