"""Multi-process starts that go wrong: a missing peer or coordinator, a bad timeout, a busy port.

Real train.py / evaluate.py processes on 127.0.0.1 (CPU, gloo collectives). Without our own
wait, JAX waits 300 s and then aborts with a C++ stack trace blaming "another task"; here each
process says what it waits for and ends with status 2 and an error naming the coordinator
address and, where it can know, the missing process. All of these fail before any data is read.
"""

import os
import socket
import subprocess
import sys
import time

import jax
import pytest

from gio_ada_jax import distributed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 5
# Start-up (imports: ~3 s, more on a busy machine) and, on process 0, ~5 s for JAX to stop
# the coordinator after the wait.
MARGIN_S = 25


def _free_port() -> int:
  with socket.socket() as s:  # the OS picks a free port; it stays free for a while
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(script: str, workdir, *flags: str) -> tuple[subprocess.Popen, float]:
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}
  process = subprocess.Popen(
      [sys.executable, script, "--config", "configs/test.py", "--workdir", str(workdir),
       *flags], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  return process, time.monotonic()


def _finish(started: tuple[subprocess.Popen, float]) -> tuple[int, str, float]:
  """Exit status, stderr and seconds taken of a started process."""
  process, start = started
  try:
    _, stderr = process.communicate(timeout=TIMEOUT_S + 90)
  except subprocess.TimeoutExpired:
    process.kill()
    _, stderr = process.communicate()
    pytest.fail(f"still running after {TIMEOUT_S + 90} s:\n{stderr[-3000:]}")
  return process.returncode, stderr, time.monotonic() - start


def _group_flags(port: int, process_id: int) -> list[str]:
  return [f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
          f"--process_id={process_id}", f"--initialization_timeout={TIMEOUT_S}"]


@pytest.fixture(scope="module")
def lonely_processes(tmp_path_factory):
  """Process 0 without process 1, and process 1 without a coordinator, run side by side."""
  tmp = tmp_path_factory.mktemp("lonely")
  ports = {0: _free_port(), 1: _free_port()}
  started = {i: _start("train.py", tmp / f"work{i}", *_group_flags(ports[i], i)) for i in ports}
  return {i: (ports[i], *_finish(started[i])) for i in ports}, tmp


def test_process_0_alone_names_the_coordinator_and_the_missing_process_1(lonely_processes):
  runs, tmp = lonely_processes
  port, returncode, stderr, seconds = runs[0]
  assert returncode == 2, stderr[-3000:]
  assert (f"process 0 of 2: starting the coordinator at 127.0.0.1:{port} and waiting up to "
          f"{TIMEOUT_S} s (--initialization_timeout) for all 2 processes") in stderr
  error = stderr.strip().splitlines()[-1]
  assert error.startswith(f"train.py: process 0 of 2 serves the coordinator at 127.0.0.1:{port}"
                          ", but not all 2 processes connected within 5 s "
                          "(--initialization_timeout): process 1 is missing."), error
  assert "Check that all 2 processes were started" in error
  assert "Check failure stack trace" not in stderr and "Traceback" not in stderr
  assert TIMEOUT_S <= seconds < TIMEOUT_S + MARGIN_S
  assert not (tmp / "work0").exists()


def test_process_1_without_a_coordinator_names_its_address(lonely_processes):
  runs, tmp = lonely_processes
  port, returncode, stderr, seconds = runs[1]
  assert returncode == 2, stderr[-3000:]
  assert (f"process 1 of 2: connecting to the coordinator at 127.0.0.1:{port} (process 0), "
          f"waiting up to {TIMEOUT_S} s (--initialization_timeout) for all 2 processes") in stderr
  error = stderr.strip().splitlines()[-1]
  assert error.startswith(f"train.py: process 1 of 2: nothing answers at the coordinator "
                          f"address 127.0.0.1:{port} after 5 s (--initialization_timeout): "
                          "process 0, which serves the coordinator, is missing"), error
  assert "Check failure stack trace" not in stderr and "Traceback" not in stderr
  assert TIMEOUT_S <= seconds < TIMEOUT_S + MARGIN_S
  assert not (tmp / "work1").exists()


@pytest.mark.parametrize("script,timeout", [("train.py", "-3"), ("evaluate.py", "0")])
def test_a_timeout_of_no_seconds_is_refused_naming_the_flag(tmp_path, script, timeout):
  returncode, stderr, _ = _finish(_start(
      script, tmp_path / "work", "--coordinator_address=127.0.0.1:1234", "--num_processes=2",
      "--process_id=1", f"--initialization_timeout={timeout}"))
  assert returncode == 2, stderr[-3000:]
  assert stderr.strip() == (
      f"{script}: --initialization_timeout {timeout}: give how many seconds each process waits "
      "for all of them to connect, more than 0 (default 300).")


def test_process_0_on_a_busy_port_says_so_before_waiting(tmp_path):
  # JAX itself sometimes crashes with a segmentation fault on a port in use.
  with socket.socket() as other_program:
    other_program.bind(("127.0.0.1", 0))
    other_program.listen()
    port = other_program.getsockname()[1]
    returncode, stderr, _ = _finish(_start("train.py", tmp_path / "work",
                                           *_group_flags(port, 0)))
  assert returncode == 2, stderr[-3000:]
  assert stderr.strip() == (
      f"train.py: process 0 of 2 cannot serve the coordinator at 127.0.0.1:{port}: port "
      f"{port} is in use on this host (another run?). Pick a free port and give the same "
      "--coordinator_address to every process.")


@pytest.mark.parametrize("given,flag", [
    (("127.0.0.1", 2, 0), "--coordinator_address '127.0.0.1' is not host:port"),
    (("127.0.0.1:99999", 2, 0), "--coordinator_address '127.0.0.1:99999' is not host:port"),
    (("127.0.0.1:1234", 0, 0), "--num_processes 0:"),
    (("127.0.0.1:1234", 2, 2), "--process_id 2 is not one of the --num_processes 2 processes"),
])
def test_bad_values_are_named_before_anything_starts(given, flag):
  with pytest.raises(distributed.ProcessGroupError) as error:
    distributed.initialize(*given)
  assert str(error.value).startswith(flag), error.value
  assert not jax.distributed.is_initialized()


def test_what_a_process_can_tell_about_the_missing_ones():
  def message(process_id: int, answers: bool) -> str:
    return distributed._timeout_message("10.0.0.1:1234", 4, process_id, 7, answers)

  assert ("not all 4 processes connected within 7 s (--initialization_timeout): one or more of "
          "processes 1, 2, 3 are missing (process 0 cannot tell which") in message(0, False)
  assert ("the coordinator address 10.0.0.1:1234 answers, but not all 4 processes connected "
          "within 7 s (--initialization_timeout): processes 1, 3 may be missing (this process "
          "cannot tell which), or process 0 runs with another --num_processes") in message(2, True)
  assert "nothing answers at the coordinator address 10.0.0.1:1234" in message(2, False)
  assert distributed._processes(list(range(1, 64))) == "processes 1 to 63"


def test_the_wait_gives_up_in_time_and_hands_on_errors():
  assert distributed._finishes_within(lambda: None, 5)
  start = time.monotonic()
  assert not distributed._finishes_within(lambda: time.sleep(3), 0.2)
  assert time.monotonic() - start < 2.5  # gave up before the 3 s call returned

  def fail():
    raise jax.errors.JaxRuntimeError("UNKNOWN: Failed to start RPC server")

  with pytest.raises(jax.errors.JaxRuntimeError, match="Failed to start RPC server"):
    distributed._finishes_within(fail, 5)
