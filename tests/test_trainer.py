"""The training loop on the tiny procedural benchmark: logs, checkpoints, exact resume."""

import os
import re
import resource
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import serialization

pytest.importorskip("tensorflow_datasets")

from gio_ada_jax import errors  # noqa: E402
from gio_ada_jax.train import checkpoint, loop  # noqa: E402
from tests.conftest import tmpfs  # noqa: E402


@pytest.fixture
def data_dir(procedural_data_dir):
  return procedural_data_dir


@pytest.fixture
def straight(trained_run):
  """The final state of an uninterrupted 6-step run (tests/conftest.py)."""
  return trained_run[0]


def _assert_same_params(a, b):
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_non_finite_metrics_stop_with_their_names():
  with pytest.raises(loop.NonFiniteError, match="loss_d_img.*grad_norm_task_net|"
                                                   "grad_norm_task_net.*loss_d_img"):
    loop.check_finite({"loss_d_img": float("nan"), "grad_norm_task_net": float("inf"),
                          "loss_seg": 1.0}, step=7, last_checkpoint=5)


def test_a_nan_message_says_what_a_rerun_starts_from():
  with pytest.raises(loop.NonFiniteError, match="checkpoint, step 5, is kept"):
    loop.check_finite({"loss_seg": float("nan")}, step=7, last_checkpoint=5)
  with pytest.raises(loop.NonFiniteError, match="No checkpoint was written yet") as error:
    loop.check_finite({"loss_seg": float("nan")}, step=2, last_checkpoint=None)
  assert "is kept" not in str(error.value)
  loop.check_finite({"loss_seg": 1.0}, step=2, last_checkpoint=None)


def test_the_step_is_traced_once_and_runs_without_host_transfers(trained_run):
  """Six steps with logging every step, pictures and a checkpoint in the middle: one trace.

  The trainer calls the step under jax.transfer_guard("disallow") on prefetched device
  batches, so the run finishing at all shows the step made no implicit host<->device copy.
  """
  from tests.conftest import TRAINED_RUN_TRACES  # pylint: disable=g-import-not-at-top
  state, _ = trained_run
  assert int(state.step) == 6
  assert len(TRAINED_RUN_TRACES) == 1


def test_train_py_runs_end_to_end_and_writes_checkpoints(data_dir, tmp_path):
  workdir = tmp_path / "work"
  result = subprocess.run(
      [sys.executable, "train.py", "--config", "configs/test.py", "--workdir", str(workdir),
       f"--config.data.data_dir={data_dir}", "--config.train.num_steps=2",
       "--config.train.image_every=2"],
      capture_output=True, text=True, check=False, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "step 2/2" in result.stdout
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == ["2"]
  assert (workdir / "export" / "task_net.msgpack").exists()
  assert not (workdir / "train.lock").exists()  # released (tests/test_workdir_lock.py)
  events = list((workdir / "tensorboard").glob("events.out.tfevents.*"))
  assert events
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  accumulator = event_accumulator.EventAccumulator(str(events[0].parent))
  accumulator.Reload()
  tags = accumulator.Tags()
  scalar_tags = set(tags["tensors"]) | set(tags["scalars"])
  assert {"train/loss_seg", "train/loss_d_out", "train/grad_norm_generator",
          "train/learning_rate"} <= scalar_tags
  image_tags = set(tags["tensors"]) | set(tags["images"])
  assert {"pictures/source_translated", "pictures/target_prediction",
          "pictures/target_depth_prediction"} <= image_tags


# Subprocesses initialise like this process does (tests/conftest.py's threefry choice).
SUBPROCESS_ENV = {**os.environ, "JAX_THREEFRY_PARTITIONABLE": "false"}


def _train_py(workdir, data_dir, *extra):
  return subprocess.Popen(
      [sys.executable, "train.py", "--config", "configs/test.py", "--workdir", str(workdir),
       f"--config.data.data_dir={data_dir}", *extra],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=SUBPROCESS_ENV)


def _stop_after(process, line_start: str, sig) -> str:
  """Send `sig` once the run prints a line starting with `line_start`; its whole stdout."""
  lines = []
  for line in process.stdout:
    lines.append(line)
    if line.startswith(line_start):
      process.send_signal(sig)
      break
  return "".join(lines) + process.communicate(timeout=600)[0]


def test_ctrl_c_checkpoints_the_step_it_is_at_and_exits_130(data_dir, tmp_path):
  """A first Ctrl-C stops like SIGTERM, after a checkpoint of the step the run is at; exit 130
  (a shell's status for Ctrl-C, not 0: `train.py ... && evaluate.py ...` stops there)."""
  workdir = tmp_path / "work"
  process = subprocess.Popen(
      [sys.executable, "train.py", "--config", "configs/test.py", "--workdir", str(workdir),
       f"--config.data.data_dir={data_dir}", "--config.train.num_steps=500",
       "--config.train.checkpoint_every=1000"],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=SUBPROCESS_ENV,
      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
  for line in process.stdout:
    if line.startswith("step "):
      process.send_signal(signal.SIGINT)
      break
  out, err = process.communicate(timeout=600)
  assert process.returncode == errors.INTERRUPTED_EXIT_CODE == 130, err[-3000:]
  assert err.strip().splitlines()[-1] == (
      "train.py: stopped by Ctrl-C (exit status 130); rerun the same command to resume from "
      "what was saved.")
  assert "Traceback" not in err and "step 500/500" not in out
  folders = [p.name for p in (workdir / "checkpoints").iterdir()]
  saved = [int(name) for name in folders if name.isdigit()]
  assert len(saved) == 1 and 1 <= saved[0] < 500, folders
  assert not [name for name in folders if "tmp" in name], folders  # committed, none half-written
  assert not (workdir / "train.lock").exists() and not (workdir / "export").exists()


def test_kill_and_sigterm_then_resume_match_an_uninterrupted_run(data_dir, straight, tmp_path):
  """kill -9 after step 4 (checkpoint 3 may or may not be committed), SIGTERM after the next
  step (checkpoints where it stands), then a plain rerun: the same parameters as 6 steps."""
  workdir = tmp_path / "work"
  killed = _train_py(workdir, data_dir)
  _stop_after(killed, "step 4/6", signal.SIGKILL)
  assert killed.returncode == -signal.SIGKILL
  assert f'"pid": {killed.pid},' in (workdir / "train.lock").read_text()  # left behind
  terminated = _train_py(workdir, data_dir, "--config.train.checkpoint_every=1000")
  out = _stop_after(terminated, "step ", signal.SIGTERM)
  assert f"train.lock: replaced the stale lock of pid {killed.pid} from " in out
  # Not 0: `train.py ... && evaluate.py ...` must not evaluate an unfinished run.
  assert terminated.returncode == errors.PREEMPTED_EXIT_CODE == 75
  assert not (workdir / "train.lock").exists()
  saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert saved and saved[-1] < 6
  assert not (workdir / "export").exists()
  final = _train_py(workdir, data_dir)
  out, err = final.communicate(timeout=600)
  assert final.returncode == 0, err[-3000:]
  assert not (workdir / "train.lock").exists()
  assert f"Resumed from step {saved[-1]}" in out and f"step {saved[-1] + 1}/6" in out
  assert "steps/s" in out and "ETA" in out
  exported = (workdir / "export" / "task_net.msgpack").read_bytes()
  restored = serialization.from_bytes(jax.device_get(straight.params["task_net"]), exported)
  for x, y in zip(jax.tree.leaves(restored), jax.tree.leaves(straight.params["task_net"])):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # Every network of the final checkpoint, not only the exported task net.
  checkpointer = checkpoint.Checkpointer(str(workdir / "checkpoints"), keep=None)
  final_params = checkpointer.restore_params(
      checkpoint.abstract_state(lambda: straight), 6)
  checkpointer.close()
  _assert_same_params(straight.replace(params=final_params), straight)


def test_a_checkpoint_that_cannot_be_written_stops_the_run_and_keeps_the_last_good_one(
    data_dir, tmp_path):
  """A file size limit (as a full disk would) set once checkpoint 10 is committed: the next
  save fails inside orbax's background writer, and the run stops with one paragraph and exit 74
  (EX_IOERR) instead of training on without checkpoints. The last good checkpoint is kept, and
  the failed step's temporary folder is removed."""
  workdir = tmp_path / "work"
  checkpoints = workdir / "checkpoints"
  process = _train_py(workdir, data_dir, "--config.train.num_steps=1000",
                      "--config.train.checkpoint_every=10", "--config.train.log_every=100",
                      "--config.train.image_every=1000")
  deadline = time.monotonic() + 600
  while not (checkpoints / "10" / "_CHECKPOINT_METADATA").exists():
    assert process.poll() is None and time.monotonic() < deadline, process.communicate()
    time.sleep(0.01)
  process.send_signal(signal.SIGSTOP)  # held while its limit changes
  _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
  resource.prlimit(process.pid, resource.RLIMIT_FSIZE, (20_000, hard))  # bytes per file
  process.send_signal(signal.SIGCONT)
  out, err = process.communicate(timeout=600)
  assert process.returncode == errors.IO_ERROR_EXIT_CODE == 74, err[-3000:]
  # orbax's background writers print their own errors before it, from other threads, which
  # may leave a line unfinished: the paragraph is found where it starts, not at a line start.
  said = re.findall(r"train\.py: .*", err)
  assert len(said) == 1, err[-3000:]
  assert "exception was never retrieved" not in err.split(said[0])[1]
  failed = int(re.match(r"train\.py: checkpoint (\d+) ", said[0]).group(1))
  kept = failed - 10  # saves started before the limit was set wrote whole checkpoints
  assert said[0].startswith(
      f"train.py: checkpoint {failed} could not be written to {checkpoints}: File too large. "
      f"Training stopped; the last checkpoint written, step {kept} ({checkpoints / str(kept)}), "
      "is kept. That folder is on the file system mounted at "), said[0]
  assert said[0].endswith(": raise the shell's file size limit (`ulimit -f`), then rerun the "
                         "same command to resume from the last checkpoint."), said[0]
  assert "step 1000/1000" not in out and failed >= 20
  names = sorted(p.name for p in checkpoints.iterdir())
  assert all(name.isdigit() for name in names), names  # no temporary folder left
  steps = sorted(map(int, names))
  assert steps[-1] == kept, names
  checkpointer = checkpoint.Checkpointer(str(checkpoints), keep=None)
  assert checkpointer.all_steps() == steps
  checkpointer.close()
  assert not (workdir / "train.lock").exists()


def test_a_checkpoint_larger_than_the_free_space_is_refused_before_it_is_written(
    data_dir, tmp_path):
  """On a real full disk (a 3 MiB tmpfs; a checkpoint here takes about 1.6 MiB): the save that
  would not fit is refused before orbax writes anything, so no writer's errors precede the
  paragraph; the checkpoint before it is kept."""
  with tmpfs(tmp_path / "disk", "3m") as disk:
    process = _train_py(disk / "work", data_dir, "--config.train.num_steps=30",
                        "--config.train.log_every=10")
    out, err = process.communicate(timeout=600)
    checkpoints = disk / "work" / "checkpoints"
    names = sorted(p.name for p in checkpoints.iterdir())
  assert process.returncode == 74, err[-3000:]
  assert "Traceback" not in err and "step 30/30" not in out
  said = err.strip().splitlines()[-1]
  assert re.fullmatch(
      rf"train\.py: checkpoint (\d+) could not be written to {re.escape(str(checkpoints))}: No "
      r"space left on device \(its arrays take [\d.]+ MiB, and [\d.]+ MiB is free\)\. Training "
      rf"stopped; the last checkpoint written, step (\d+) \({re.escape(str(checkpoints))}/\d+\), "
      rf"is kept\. That folder is on the file system mounted at {re.escape(str(disk))} "
      r"\([\d.]+ MiB free of 3\.0 MiB\): free space there, then rerun the same command to "
      r"resume from the last checkpoint\.", said), said
  assert names and all(name.isdigit() for name in names), names
