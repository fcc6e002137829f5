"""Shared test setup: float32 convolutions at full precision, configs by name, one XLA
compilation cache for the session."""

import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile

import jax
import pytest

# Many tests compile the same tiny programs again: the trainer tests' train.py subprocesses,
# resumed runs, the CycleGAN stages. JAX's persistent compilation cache, in a fresh folder
# for this session only (so every session compiles everything once) and inherited through
# the environment by the subprocesses and by pytest-xdist's workers (`make test` runs two),
# turns those repeats into cache hits. Only the process that made the folder removes it.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(
      prefix="gio_ada_jax_test_xla_cache_")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)



# `make test` runs each file's tests on one pytest-xdist worker (--dist loadgroup, one group per
# file), so its module fixtures are built once. These files compile the same float32 steps (the
# variant rows): on one worker the second finds them in the compilation cache, where two
# workers would compile them side by side (the two files: 318 s of CPU instead of 367 s).
SAME_WORKER = {"test_step_parity.py": "train_steps", "test_train_step.py": "train_steps"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
  for item in items:
    item.add_marker(pytest.mark.xdist_group(SAME_WORKER.get(item.path.name, item.path.name)))


def run_side_by_side(commands: dict[str, list[str]], timeout=600
                     ) -> dict[str, tuple[int, str, str]]:
  """Run the Python commands (argument lists after `python`) side by side; {name: (exit
  status, stdout, stderr)}."""
  env = {**os.environ, "JAX_THREEFRY_PARTITIONABLE": "false"}
  started = {name: subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=env)
             for name, args in commands.items()}
  done = {}
  for name, process in started.items():
    out, err = process.communicate(timeout=timeout)
    done[name] = (process.returncode, out, err)
  return done


def xla_flags_for(devices: int) -> str:
  """This session's XLA_FLAGS (`make test`'s compile settings) for a subprocess with `devices`
  simulated CPU devices."""
  kept = [flag for flag in os.environ.get("XLA_FLAGS", "").split()
          if not flag.startswith("--xla_force_host_platform_device_count=")]
  return " ".join([f"--xla_force_host_platform_device_count={devices}", *kept])


# Parity is defined in float32; on accelerators XLA would otherwise use TF32-like precision.
jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture
def default_model_config():
  """Paper-sized networks (configs/default.py)."""
  from configs import default  # pylint: disable=g-import-not-at-top
  return default.get_config().model


@pytest.fixture
def tiny_model_config():
  """Narrow networks for fast tests (configs/test.py)."""
  from configs import test  # pylint: disable=g-import-not-at-top
  return test.get_config().model

# JAX 0.10's default partitionable threefry makes XLA:CPU spend about a second compiling each
# random initializer; the classic threefry compiles in a fraction of that. Tests only need
# some random init, not the production one, so they use the fast one.
jax.config.update("jax_threefry_partitionable", False)


@pytest.fixture(scope="session")
def procedural_data_dir(tmp_path_factory):
  """The tiny procedural benchmark of configs/test.py, prepared once for the session."""
  from configs import test  # pylint: disable=g-import-not-at-top
  from gio_ada_jax.data import prepare  # pylint: disable=g-import-not-at-top
  path = tmp_path_factory.mktemp("procedural_data")
  prepare.prepare("procedural", str(path), test.get_config(), num_workers=1)
  return str(path)


def tiny_training_config(data_dir: str, num_steps: int):
  """configs/test.py reading `data_dir`, trained for `num_steps` (checkpoints every 3)."""
  from configs import test  # pylint: disable=g-import-not-at-top
  config = test.get_config()
  config.data.data_dir = data_dir
  config.train.num_steps = num_steps
  return config


TRAINED_RUN_TRACES = []  # one entry per trace of the training step during `trained_run`


@pytest.fixture(scope="session")
def trained_run(procedural_data_dir, tmp_path_factory):
  """(final state, workdir) of an uninterrupted 6-step run: checkpoints 3 and 6, export."""
  from gio_ada_jax import trainer  # pylint: disable=g-import-not-at-top
  from gio_ada_jax.train import step as train_step  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp("trained_run")
  TRAINED_RUN_TRACES.clear()
  step_function = train_step.train_step

  def counting_step(*args, **kwargs):  # runs once per trace, not per step
    TRAINED_RUN_TRACES.append(1)
    return step_function(*args, **kwargs)

  train_step.train_step = counting_step
  try:
    state = trainer.train_and_evaluate(tiny_training_config(procedural_data_dir, 6),
                                       str(workdir))
  finally:
    train_step.train_step = step_function
  return state, str(workdir)



@contextlib.contextmanager
def tmpfs(path, size: str, then_read_only=None):
  """A real file system of `size` (e.g. "3m") mounted at the new folder `path` for the block;
  given `then_read_only`, it is called with `path` and the file system is then remounted
  read-only. The test skips where a tmpfs cannot be mounted (not root)."""
  path.mkdir()
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                           capture_output=True, text=True, check=False)
  if mounted.returncode != 0:
    pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
  try:
    if then_read_only is not None:
      then_read_only(path)
      subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
    yield path
  finally:
    subprocess.run(["umount", str(path)], check=True)
