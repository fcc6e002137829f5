"""Multi-process data parallelism: 2 processes x 2 CPU devices train and evaluate like 1
process x 4.

Both runs start from the same seed and see the same global batches (tests/multihost_worker.py);
the two processes talk through jax.distributed (gloo collectives on CPU), so the step's pmean
spans both. The parameters after three steps must agree with the single-process run's, and
evaluating the initial task net on a split sharded over both processes must count exactly what
one process counts.
"""

import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from gio_ada_jax import distributed
from tests.conftest import xla_flags_for

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "tests", "multihost_worker.py")
TIMEOUT_S = 300  # three processes compiling the step on a 2-core machine take ~1.5 minutes
CLUSTER_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
                "SLURM_LOCALID", "OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_SIZE",
                "KUBERNETES_SERVICE_HOST", "JOB_COMPLETION_INDEX")


@pytest.fixture
def no_cluster(monkeypatch):
  """An environment without any scheduler's variables."""
  for var in CLUSTER_VARS:
    monkeypatch.delenv(var, raising=False)
  return monkeypatch


@pytest.mark.parametrize("given", [("127.0.0.1:1234", None, None), (None, 2, 0),
                                   ("127.0.0.1:1234", 2, None)])
def test_partial_flags_name_the_missing_ones(given):
  with pytest.raises(ValueError, match="go together") as error:
    distributed.initialize(*given)
  missing = [flag for flag, value in zip(distributed.FLAG_NAMES, given) if value is None]
  assert all(flag in str(error.value).split("also set")[1] for flag in missing), error.value


def test_single_host_joins_nothing(no_cluster):
  assert distributed.detected_cluster() is None
  distributed.initialize(None, None, None)
  assert not jax.distributed.is_initialized()
  assert distributed.is_main_process()


def test_detects_multi_task_slurm_steps_and_mpirun(no_cluster):
  slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node[1-2]", "SLURM_PROCID": "0",
           "SLURM_LOCALID": "0", "SLURM_NTASKS": "1"}
  for var, value in slurm.items():
    no_cluster.setenv(var, value)
  assert distributed.detected_cluster() is None  # one task: a single process
  no_cluster.setenv("SLURM_NTASKS", "8")
  assert distributed.detected_cluster() == "SLURM"
  for var in slurm:
    no_cluster.delenv(var)
  no_cluster.setenv("OMPI_MCA_orte_hnp_uri", "1.0;tcp://10.0.0.1:1234")
  no_cluster.setenv("OMPI_COMM_WORLD_SIZE", "4")
  assert distributed.detected_cluster() == "Open MPI"


def _gloo_available() -> bool:
  try:
    from jax._src.lib import _jax  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  return hasattr(_jax, "make_gloo_tcp_collectives")


def _free_port() -> int:
  try:
    import portpicker  # pylint: disable=g-import-not-at-top
  except ImportError:
    with socket.socket() as s:  # the OS picks a free port; it stays free for a while
      s.bind(("127.0.0.1", 0))
      return s.getsockname()[1]
  return portpicker.pick_unused_port()


def _start(tmp_path, name: str, process_id: int, num_processes: int, devices: int, port: int,
           out: str) -> tuple[subprocess.Popen, str]:
  env = dict(os.environ)
  env["XLA_FLAGS"] = xla_flags_for(devices)
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
  log = str(tmp_path / f"{name}.log")
  with open(log, "w") as f:  # a file, not a pipe: gloo's chatter cannot fill it and block
    process = subprocess.Popen(
        [sys.executable, WORKER, "--process_id", str(process_id), "--num_processes",
         str(num_processes), "--port", str(port), "--devices", str(devices), "--out", out],
        cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
  return process, log


def _wait_all(workers: dict[str, tuple[subprocess.Popen, str]]) -> None:
  """Wait for every worker; on a failure or the timeout kill the rest and show the logs."""
  deadline = time.monotonic() + TIMEOUT_S
  failed = None
  while failed is None and any(p.poll() is None for p, _ in workers.values()):
    if time.monotonic() > deadline:
      failed = f"timed out after {TIMEOUT_S} s"
    # A dead process leaves its peer waiting on collectives; stop at the first failure.
    elif any(p.poll() not in (None, 0) for p, _ in workers.values()):
      failed = "a worker failed"
    else:
      time.sleep(0.5)
  failed = failed or ("a worker failed" if any(p.returncode for p, _ in workers.values())
                      else None)
  if failed is None:
    return
  for process, _ in workers.values():
    if process.poll() is None:
      process.kill()
      process.wait()
  report = []
  for name, (process, log) in workers.items():
    with open(log) as f:
      tail = f.read()[-4000:]
    report.append(f"--- {name} (exit {process.returncode}) ---\n{tail}")
  pytest.fail(f"{failed}:\n" + "\n".join(report))


def _load(path: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int, dict]:
  with np.load(path) as data:
    names = list(data["names"])
    initial = {n: data[f"initial_{i}"] for i, n in enumerate(names)}
    final = {n: data[f"final_{i}"] for i, n in enumerate(names)}
    evaluated = {k: data[k] for k in ("confusion", "depth_sums", "num_images")}
    return initial, final, int(data["step"]), evaluated


def test_two_processes_train_like_one(tmp_path):
  if not _gloo_available():
    pytest.skip("this jaxlib has no gloo CPU collectives, so CPU processes cannot reduce "
                "across each other")
  one, two = str(tmp_path / "one.npz"), str(tmp_path / "two.npz")
  port = _free_port()
  workers = {
      "1 process x 4 devices": _start(tmp_path, "single", 0, 1, 4, port, one),
      "process 0 of 2": _start(tmp_path, "p0", 0, 2, 2, port, two),
      "process 1 of 2": _start(tmp_path, "p1", 1, 2, 2, port, two),
  }
  _wait_all(workers)

  initial, single, step, single_eval = _load(one)
  initial_two, multi, step_two, multi_eval = _load(two)
  _, multi_p1, _, multi_eval_p1 = _load(two + ".process1.npz")
  assert step == step_two == 3
  assert list(single) == list(multi)
  for name in single:
    np.testing.assert_array_equal(initial[name], initial_two[name], err_msg=name)
    # Both processes hold the same model, bit for bit: they applied the same pmean'd update.
    np.testing.assert_array_equal(multi[name], multi_p1[name], err_msg=name)
    # The cross-process mean may sum in another order than the single-process one.
    np.testing.assert_allclose(multi[name], single[name], rtol=1e-5, atol=1e-6, err_msg=name)
  changed = {name.split("]")[0] + "]" for name in single
             if not np.array_equal(single[name], initial[name])}
  assert changed == {"['generator']", "['task_net']", "['d_img']", "['d_out']"}, changed

  # Evaluation (of the identical initial task net): each process counted its shard and the
  # psum gave both processes the totals, which are what one process with 4 devices counts.
  for key in ("confusion", "depth_sums", "num_images"):
    np.testing.assert_array_equal(multi_eval[key], multi_eval_p1[key], err_msg=key)
  np.testing.assert_array_equal(multi_eval["confusion"], single_eval["confusion"])
  np.testing.assert_allclose(multi_eval["depth_sums"], single_eval["depth_sums"], rtol=1e-6)
  assert int(multi_eval["num_images"]) == int(single_eval["num_images"]) == 7
