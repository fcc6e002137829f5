"""Two train.py processes on one workdir. The second writer is refused with a
clear message and changes nothing; a lock left by a killed run on this host is replaced; one
from another host is refused; the lock goes away on every exit Python unwinds.

(tests/test_trainer.py checks the lock around real runs: gone after a finished run and after a
SIGTERM stop, and a kill -9's lock replaced by the next run.)
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from gio_ada_jax.train import workdir_lock
from tests.conftest import xla_flags_for

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def sleeper():
  """A live process that is not this one."""
  process = subprocess.Popen(["sleep", "120"])
  yield process
  process.kill()
  process.wait()


def _write_lock(workdir, **changes) -> str:
  """A lock as a run of this host with `changes` would have written it; its text."""
  record = {**workdir_lock.lock_record(), "started": "2024-05-06T07:08:09+00:00", **changes}
  text = json.dumps(record, indent=1) + "\n"
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "train.lock"), "w") as f:
    f.write(text)
  return text


def _snapshot(folder) -> dict:
  """Every file and folder under `folder` with its content and modification time."""
  found = {}
  for root, dirs, files in os.walk(folder):
    for name in dirs + files:
      path = os.path.join(root, name)
      content = None
      if name in files:
        with open(path, "rb") as f:
          content = f.read()
      found[os.path.relpath(path, folder)] = (content, os.stat(path).st_mtime_ns)
  return found


def _dead_pid() -> int:
  process = subprocess.Popen(["true"])
  process.wait()
  return process.pid


def test_train_py_refuses_a_workdir_a_live_run_holds_and_changes_nothing(
    tmp_path, sleeper, procedural_data_dir):
  workdir = tmp_path / "work"
  start = workdir_lock.process_status(sleeper.pid)[1]
  _write_lock(workdir, pid=sleeper.pid, process_start=start,
              command=["python", "train.py", "--workdir", str(workdir)])
  os.makedirs(workdir / "checkpoints" / "3")  # what the holder has written so far
  (workdir / "checkpoints" / "3" / "state").write_bytes(b"the holder's checkpoint")
  before = _snapshot(workdir)
  result = subprocess.run(
      [sys.executable, "train.py", "--config", "configs/test.py", "--workdir", str(workdir),
       f"--config.data.data_dir={procedural_data_dir}", "--config.train.num_steps=2"],
      cwd=REPO, capture_output=True, text=True, check=False, timeout=300,
      env={**os.environ, "JAX_THREEFRY_PARTITIONABLE": "false"})
  assert result.returncode == 2, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  assert result.stderr.startswith(
      f"train.py: {workdir} is in use by another training run: process {sleeper.pid} on host "
      f"{socket.gethostname()}, started 2024-05-06T07:08:09+00:00 (command: python train.py "
      f"--workdir {workdir}) holds {workdir}/train.lock."), result.stderr
  assert f"kill {sleeper.pid}" in result.stderr and "another workdir" in result.stderr
  assert _snapshot(workdir) == before


def test_a_lock_of_a_dead_process_on_this_host_is_replaced(tmp_path, capsys):
  pid = _dead_pid()
  _write_lock(tmp_path, pid=pid)
  lock = workdir_lock.acquire(str(tmp_path))
  try:
    assert capsys.readouterr().out == (
        f"{tmp_path}/train.lock: replaced the stale lock of pid {pid} from "
        "2024-05-06T07:08:09+00:00 (that process is no longer running).\n")
    with open(tmp_path / "train.lock") as f:
      assert json.load(f)["pid"] == os.getpid()
  finally:
    lock.release()
  assert os.listdir(tmp_path) == []


def test_a_reused_pid_is_not_the_holder(tmp_path, sleeper, capsys):
  """The lock's pid runs, but started at another time than the process that wrote it."""
  start = workdir_lock.process_status(sleeper.pid)[1]
  if start is None:
    pytest.skip("process start times are read from /proc (Linux)")
  _write_lock(tmp_path, pid=sleeper.pid, process_start=start - 1)
  workdir_lock.acquire(str(tmp_path)).release()
  assert f"pid {sleeper.pid} now belongs to a process started later" in capsys.readouterr().out
  # The same pid with its true start time is the holder.
  text = _write_lock(tmp_path, pid=sleeper.pid, process_start=start)
  with pytest.raises(workdir_lock.WorkdirLockError, match="in use by another training run"):
    workdir_lock.acquire(str(tmp_path))
  assert (tmp_path / "train.lock").read_text() == text


def test_a_lock_from_another_host_is_refused_and_kept(tmp_path):
  text = _write_lock(tmp_path, host="tpu-vm-7", pid=_dead_pid())
  pid = json.loads(text)["pid"]
  with pytest.raises(workdir_lock.WorkdirLockError) as error:
    workdir_lock.acquire(str(tmp_path))
  message = str(error.value)
  assert message.startswith(
      f"{tmp_path} is in use by a training run elsewhere: process {pid} on host tpu-vm-7, "
      "started 2024-05-06T07:08:09+00:00"), message
  assert f"cannot be checked from this host ({socket.gethostname()})" in message
  assert f"If that run is gone, delete {tmp_path}/train.lock and rerun" in message
  assert "probably stopped" not in message  # refreshed just now
  # Untouched for an hour: still refused (never taken over across hosts), but said so.
  os.utime(tmp_path / "train.lock", (time.time() - 3600,) * 2)
  with pytest.raises(workdir_lock.WorkdirLockError,
                     match="last refreshed 60 min ago; a running holder refreshes it every 60 s, "
                           "so that run has probably stopped"):
    workdir_lock.acquire(str(tmp_path))
  assert (tmp_path / "train.lock").read_text() == text


def test_another_boot_or_pid_namespace_is_another_system():
  """A pid means nothing after a reboot or in another container: not checkable from here."""
  system = workdir_lock.this_system()
  holder = {**system, "pid": os.getpid()}
  assert workdir_lock.judge(holder, system)[0] == "live"
  for key in ("boot_id", "pid_namespace"):
    assert workdir_lock.judge({**holder, key: "other"}, system)[0] == "elsewhere"
  assert workdir_lock.judge({**holder, "pid": _dead_pid()}, system)[0] == "stale"


def test_a_file_that_is_not_a_lock_is_refused_and_kept(tmp_path):
  (tmp_path / "train.lock").write_text("my notes")
  with pytest.raises(workdir_lock.WorkdirLockError,
                     match="train.lock exists but is not a lock that training wrote "
                           r"\(it holds 'my notes'\)\. If no training run uses this workdir, "
                           "delete the file"):
    workdir_lock.acquire(str(tmp_path))
  assert (tmp_path / "train.lock").read_text() == "my notes"


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError])
def test_the_lock_is_released_when_the_run_stops_with_an_exception(tmp_path, stop):
  with pytest.raises(stop):
    with workdir_lock.hold(str(tmp_path)):
      assert (tmp_path / "train.lock").exists()
      raise stop()
  assert not (tmp_path / "train.lock").exists()


def test_release_keeps_a_lock_that_is_no_longer_this_runs(tmp_path):
  lock = workdir_lock.acquire(str(tmp_path))
  text = _write_lock(tmp_path, host="elsewhere")  # deleted by hand, then another run took it
  lock.release()
  assert (tmp_path / "train.lock").read_text() == text


def test_the_holder_refreshes_the_lock(tmp_path, monkeypatch):
  monkeypatch.setattr(workdir_lock, "HEARTBEAT_S", 0.05)
  lock = workdir_lock.acquire(str(tmp_path))
  try:
    old = time.time() - 3600
    os.utime(tmp_path / "train.lock", (old, old))
    time.sleep(0.5)
    assert os.stat(tmp_path / "train.lock").st_mtime > old + 3000
  finally:
    lock.release()


def test_runs_replacing_one_stale_lock_at_once_end_with_one_holder(tmp_path, monkeypatch):
  """8 takers at once, 5 times: exactly one takes the lock, the others are refused.

  Each taker pauses after reading the lock, so all of them find it stale before any replaces
  it: a taker removing "the stale lock" must not remove the fresh one another just wrote.
  """
  read_settled = workdir_lock._read_settled  # pylint: disable=protected-access

  def slow_read(path):
    text = read_settled(path)
    time.sleep(0.05)
    return text

  monkeypatch.setattr(workdir_lock, "_read_settled", slow_read)
  for _ in range(5):
    _write_lock(tmp_path, pid=_dead_pid())
    barrier = threading.Barrier(8)
    taken, refused = [], []

    def take():
      barrier.wait()
      try:
        taken.append(workdir_lock.acquire(str(tmp_path)))
      except workdir_lock.WorkdirLockError as e:
        refused.append(str(e))

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
      thread.start()
    for thread in threads:
      thread.join()
    assert len(taken) == 1 and len(refused) == 7, refused
    assert all("in use by another training run" in message for message in refused), refused
    taken[0].release()
    assert os.listdir(tmp_path) == []


def _gloo_available() -> bool:
  try:
    from jax._src.lib import _jax  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  return hasattr(_jax, "make_gloo_tcp_collectives")


def test_the_processes_of_one_run_are_one_writer_and_stop_together(tmp_path, sleeper):
  """2 real processes: both refused with process 0's message for a held workdir (none waits in
  a collective); for a free one process 0 holds the lock for both and releases it."""
  if not _gloo_available():
    pytest.skip("this jaxlib has no gloo CPU collectives")
  from tests.test_multihost import _free_port  # pylint: disable=g-import-not-at-top
  locked, free = tmp_path / "locked", tmp_path / "free"
  _write_lock(locked, pid=sleeper.pid, process_start=workdir_lock.process_status(sleeper.pid)[1])
  port = _free_port()
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": xla_flags_for(1),
         "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}
  workers = [subprocess.Popen(
      [sys.executable, os.path.join(REPO, "tests", "multihost_lock_worker.py"), "--process_id",
       str(i), "--num_processes", "2", "--port", str(port), "--locked", str(locked), "--free",
       str(free)], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True) for i in range(2)]
  try:
    outputs = [worker.communicate(timeout=120)[0] for worker in workers]
  finally:
    for worker in workers:
      worker.kill()
  assert [worker.returncode for worker in workers] == [0, 0], outputs
  refusals = [[line for line in out.splitlines() if "refused" in line] for out in outputs]
  assert refusals[0] == refusals[1] and len(refusals[0]) == 1, outputs
  assert refusals[0][0].startswith(f"refused: {locked} is in use by another training run: "
                                   f"process {sleeper.pid} on host"), outputs
  holder = [line for line in outputs[0].splitlines() if line.startswith("inside: ")]
  pid0 = workers[0].pid
  assert holder == [f"inside: {pid0} (this process: {pid0})"], outputs
  assert f"inside: {pid0} (this process: {workers[1].pid})" in outputs[1], outputs
  assert "released: True" in outputs[0], outputs


@pytest.mark.parametrize("kind", ["folder", "dangling link"])
def test_a_lock_path_that_is_no_file_is_refused_and_kept(tmp_path, kind):
  """A folder used to end in an IsADirectoryError traceback; a dangling link in "other runs
  kept taking and releasing this lock" after 20 tries."""
  path = tmp_path / "train.lock"
  if kind == "folder":
    path.mkdir()
    what = "it cannot be read (Is a directory)"
  else:
    path.symlink_to(tmp_path / "missing")
    what = f"it is a link to {tmp_path / 'missing'}, which does not exist"
  with pytest.raises(workdir_lock.WorkdirLockError) as raised:
    workdir_lock.acquire(str(tmp_path))
  assert str(raised.value) == (f"{path} is not a lock that training wrote: {what}. If no "
                               "training run uses this workdir, remove it and rerun.")
  assert path.is_dir() if kind == "folder" else path.is_symlink()
