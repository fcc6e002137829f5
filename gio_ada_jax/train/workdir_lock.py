"""One training run per workdir: WORKDIR/train.lock, held by trainer.train_and_evaluate.

Two runs writing one workdir corrupt each other's checkpoints, so the second one is refused
before it writes anything. The lock file is created atomically (O_CREAT | O_EXCL) and says who
holds it: host, pid, the process's start time (a reused pid is not the holder), the start date
and the command line. It is removed on every exit that unwinds Python (the end of training, an
error, SIGTERM's checkpoint-and-return, Ctrl-C); a killed run (kill -9, a lost machine) leaves
it behind. A later run on the same host replaces such a stale lock once the holder's process is
gone. A holder on another host cannot be checked from here, so its lock is refused, saying how
long ago it was refreshed (a live holder touches it every HEARTBEAT_S seconds) and to delete it
if that run is gone. Readers (evaluate.py) take no lock. In a multi-process run process 0 takes
the lock for the whole run and every process receives its verdict, so all stop together.
"""

import contextlib
import datetime
import json
import os
import shlex
import socket
import sys
import threading
import time

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from gio_ada_jax import workdir as workdir_lib
from gio_ada_jax.distributed import is_main_process
from gio_ada_jax.errors import UserError

HEARTBEAT_S = 60.0  # how often the holder refreshes the lock file's modification time
PROBABLY_STOPPED_S = 10 * HEARTBEAT_S  # a lock untouched this long: its holder likely stopped
_MESSAGE_BYTES = 4096  # room for process 0's verdict when broadcast to the other processes


class WorkdirLockError(UserError, RuntimeError):
  """The workdir is in use by another run, or its lock cannot be taken; the message says what
  to do."""


def _read_text(path: str) -> str | None:
  try:
    with open(path) as f:
      return f.read()
  except FileNotFoundError:
    return None


def _first_line(path: str) -> str | None:
  try:
    text = _read_text(path)
  except OSError:
    return None
  return text.strip() or None if text is not None else None


def this_system() -> dict:
  """What must match for a lock's pid to be checkable here: host name, boot (a reboot reuses
  pids) and pid namespace (containers); the last two are None where the system has no /proc."""
  try:
    namespace = os.readlink("/proc/self/ns/pid")
  except OSError:
    namespace = None
  return {"host": socket.gethostname(),
          "boot_id": _first_line("/proc/sys/kernel/random/boot_id"),
          "pid_namespace": namespace}


def process_status(pid: int) -> tuple[bool, int | None]:
  """(whether `pid` runs, its start time in clock ticks after boot or None where unknown)."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      # "pid (command) state ppid ...": the command may hold spaces and parentheses.
      fields = f.read().rsplit(")", 1)[1].split()
    return fields[0] != "Z", int(fields[19])  # a zombie has exited; field 22 is starttime
  except FileNotFoundError:
    if os.path.isdir("/proc/self"):
      return False, None
  except (OSError, IndexError, ValueError):
    pass
  try:  # no /proc (macOS): whether a signal could reach it
    os.kill(pid, 0)
  except ProcessLookupError:
    return False, None
  except PermissionError:  # another user's process
    pass
  return True, None


def lock_record() -> dict:
  """What this process writes into the lock."""
  return {**this_system(), "pid": os.getpid(), "process_start": process_status(os.getpid())[1],
          "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
          "command": [sys.executable] + sys.argv, "processes": jax.process_count()}


def parse_record(text: str) -> dict | None:
  """The lock's record, or None when `text` is not one this module wrote."""
  try:
    record = json.loads(text)
  except ValueError:
    return None
  if not (isinstance(record, dict) and isinstance(record.get("host"), str)
          and isinstance(record.get("pid"), int) and record["pid"] > 0
          and isinstance(record.get("started"), str)):
    return None
  return record


def judge(holder: dict, system: dict, status_of=process_status) -> tuple[str, str]:
  """("live" | "stale" | "elsewhere", why) for the lock `holder` seen from `system`.

  "elsewhere": another host, boot or pid namespace, where its pid means nothing here.
  """
  if any(holder.get(key) != value for key, value in system.items()):
    return "elsewhere", ""
  running, start = status_of(holder["pid"])
  if not running:
    return "stale", "that process is no longer running"
  recorded = holder.get("process_start")
  if recorded is not None and start is not None and start != recorded:
    return "stale", f"pid {holder['pid']} now belongs to a process started later"
  return "live", ""


def _duration(seconds: float) -> str:
  for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
    if seconds >= 2 * size:
      return f"{seconds / size:.0f} {unit}"
  return f"{max(seconds, 0):.0f} s"


def _command(holder: dict) -> str:
  command = holder.get("command")
  if isinstance(command, list) and all(isinstance(part, str) for part in command):
    return shlex.join(command)
  return "not recorded"


def held_message(workdir: str, holder: dict, verdict: str, age_s: float, system: dict) -> str:
  """Why `workdir` is refused: who holds it and what to do."""
  path = workdir_lib.lock(workdir)
  who = (f"process {holder['pid']} on host {holder['host']}, started {holder['started']} "
         f"(command: {_command(holder)})")
  if verdict == "live":
    return (f"{workdir} is in use by another training run: {who} holds {path}. Two runs "
            "writing one workdir corrupt its checkpoints. Wait for that run to end, stop it "
            f"(kill {holder['pid']}: it checkpoints, releases the lock and this command then "
            "resumes from it), or give this run another workdir.")
  if holder["host"] == system["host"]:
    where = (f"it was written under another boot or process namespace of {system['host']} (a "
             "restart since, another container or another machine of that name), so whether "
             "that process still runs cannot be checked from here")
  else:
    where = (f"whether it still runs cannot be checked from this host ({system['host']})")
  refreshed = f"the lock was last refreshed {_duration(age_s)} ago"
  if age_s > PROBABLY_STOPPED_S:
    refreshed += (f"; a running holder refreshes it every {HEARTBEAT_S:.0f} s, so that run "
                  "has probably stopped")
  return (f"{workdir} is in use by a training run elsewhere: {who} holds {path}; {where}; "
          f"{refreshed}. If that run is gone, delete {path} and rerun; otherwise wait for it or "
          "give this run another workdir.")


def _unreadable_message(path: str, text: str) -> str:
  shown = text[:200] + ("..." if len(text) > 200 else "")
  return (f"{path} exists but is not a lock that training wrote (it holds {shown!r}). If no "
          "training run uses this workdir, delete the file and rerun.")


def _not_a_file_message(path: str, what: str) -> str:
  return (f"{path} is not a lock that training wrote: {what}. If no training run uses this "
          "workdir, remove it and rerun.")


def _read_settled(path: str) -> str | None:
  """The lock's text; a lock just created may be empty for an instant, so an unreadable one is
  read again for up to a second. None when it disappeared. WorkdirLockError when `path` is
  something no run writes (a folder, a dangling link, ...), which would never disappear."""
  for _ in range(10):
    try:
      text = _read_text(path)
    except OSError as e:  # a folder, a file this user may not read, ...
      raise WorkdirLockError(_not_a_file_message(path, f"it cannot be read ({e.strerror})")
                             ) from None
    if text is None and os.path.islink(path):
      raise WorkdirLockError(_not_a_file_message(
          path, f"it is a link to {os.readlink(path)}, which does not exist"))
    if text is None or parse_record(text) is not None:
      return text
    time.sleep(0.1)
  return text


def _create_exclusive(path: str, text: str) -> bool:
  """Write `text` to `path` unless it exists (atomically); whether it was written."""
  try:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
  except FileExistsError:
    return False
  except OSError as e:
    raise WorkdirLockError(f"cannot create the training lock {path}: {e.strerror}. The workdir "
                           "must be a folder this run can write.") from e
  try:
    os.write(fd, text.encode())
    os.fsync(fd)
  finally:
    os.close(fd)
  return True


def _takeover_path(path: str) -> str:
  return path + ".takeover"


def _remove_stale(path: str, stale: str, text: str) -> bool:
  """Remove the lock at `path` if it still holds `stale`; whether it was removed.

  Only the holder of the takeover lock (`text`, created like the lock) may remove a stale lock,
  so two runs that both found it stale cannot remove each other's fresh lock; the other waits.
  """
  takeover = _takeover_path(path)
  if not _create_exclusive(takeover, text):
    held = _read_text(takeover)
    holder = parse_record(held) if held is not None else None
    if holder is not None and judge(holder, this_system())[0] == "stale":
      raise WorkdirLockError(
          f"{takeover} was left by process {holder['pid']}, which stopped while replacing a "
          f"stale {path}. If no training run uses this workdir, delete {takeover} and rerun.")
    time.sleep(0.05)  # another run is replacing it (for a few microseconds)
    return False
  try:
    if _read_text(path) != stale:
      return False
    os.remove(path)
    return True
  finally:
    os.remove(takeover)


class Lock:
  """A taken lock: refreshed every HEARTBEAT_S seconds until `release`."""

  def __init__(self, path: str, text: str):
    self.path = path
    self._text = text
    self._pid = os.getpid()
    self._stop = threading.Event()
    self._heartbeat = threading.Thread(target=self._beat, daemon=True,
                                       name="gio_ada_jax train.lock heartbeat")
    self._heartbeat.start()

  def _beat(self) -> None:
    while not self._stop.wait(HEARTBEAT_S):
      try:
        ours = _read_text(self.path) == self._text
        if ours:
          os.utime(self.path)
      except OSError as e:  # e.g. a network file system that is briefly away
        logging.warning("Could not refresh %s: %s", self.path, e)
        continue
      if not ours:
        logging.error("%s is no longer this run's lock (deleted or replaced by hand): another "
                      "run may now write to the same workdir.", self.path)
        return

  def release(self) -> None:
    """Remove the lock if it is still this process's (a forked child never removes it)."""
    self._stop.set()
    if self._heartbeat.is_alive() and threading.current_thread() is not self._heartbeat:
      self._heartbeat.join()
    if os.getpid() == self._pid and _read_text(self.path) == self._text:
      os.remove(self.path)


def acquire(workdir: str, attempts: int = 20) -> Lock:
  """Take `workdir`'s lock for this process (replacing a stale one of this host, saying so);
  WorkdirLockError naming the holder when another run holds it."""
  path = workdir_lib.lock(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise WorkdirLockError(f"cannot create the workdir {workdir}: {e.strerror}.") from e
  text = json.dumps(lock_record(), indent=1) + "\n"
  for _ in range(attempts):
    if _create_exclusive(path, text):
      return Lock(path, text)
    held = _read_settled(path)
    if held is None:
      continue  # released in the meantime
    holder = parse_record(held)
    if holder is None:
      raise WorkdirLockError(_unreadable_message(path, held))
    system = this_system()
    verdict, why = judge(holder, system)
    if verdict != "stale":
      try:
        age_s = time.time() - os.stat(path).st_mtime
      except FileNotFoundError:
        continue
      raise WorkdirLockError(held_message(workdir, holder, verdict, age_s, system))
    if _remove_stale(path, held, text):
      print(f"{path}: replaced the stale lock of pid {holder['pid']} from {holder['started']} "
            f"({why}).", flush=True)
  raise WorkdirLockError(f"{path}: other runs kept taking and releasing this lock while this "
                         f"one tried {attempts} times; is something starting runs in a loop?")


def _broadcast_text(text: str) -> str:
  """Process 0's `text` in every process (UTF-8, at most _MESSAGE_BYTES)."""
  data = np.zeros(_MESSAGE_BYTES, np.uint8)
  if is_main_process():
    encoded = text.encode()[:_MESSAGE_BYTES]
    data[:len(encoded)] = np.frombuffer(encoded, np.uint8)
  received = np.asarray(multihost_utils.broadcast_one_to_all(data))
  return bytes(received).rstrip(b"\0").decode(errors="replace")


@contextlib.contextmanager
def hold(workdir: str):
  """Hold `workdir`'s lock for the block (process 0 for every process of the run).

  Raises WorkdirLockError in every process when process 0 could not take it.
  """
  lock, error = None, None
  if is_main_process():
    try:
      lock = acquire(workdir)
    except Exception as e:  # pylint: disable=broad-except  (re-raised below, after the others hear)
      error = e
  try:
    if jax.process_count() > 1:
      # Every process must learn the verdict: one that went on alone would wait forever in
      # the first collective for the processes that stopped.
      verdict = ("" if error is None else str(error) if isinstance(error, WorkdirLockError)
                 else f"process 0 failed to take {workdir_lib.lock(workdir)}: "
                      f"{type(error).__name__}: {error}")
      verdict = _broadcast_text(verdict)
      if verdict and error is None:
        raise WorkdirLockError(verdict)
    if error is not None:
      raise error
    yield lock
  finally:
    if lock is not None:
      lock.release()
