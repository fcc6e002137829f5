"""Every command line answers a flag that is unknown or does not parse with one line naming it
and exit status 2 (gio_ada_jax/cli.py), and prints a UserError as one line with its status."""

import os
import signal
import subprocess
import sys

import pytest

from gio_ada_jax import cli, errors
from gio_ada_jax.config_checks import ConfigError
from gio_ada_jax.train.loop import NonFiniteError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Each command, and one of its own flags that takes an integer (or a bool).
COMMANDS = {
    "train.py": (["train.py"], "--num_processes"),
    "evaluate.py": (["evaluate.py"], "--step"),
    "demo": (["-m", "gio_ada_jax.demo"], "--oracle"),
    "experiments": (["-m", "gio_ada_jax.experiments"], "--table"),
    "prepare": (["-m", "gio_ada_jax.data.prepare"], "--num_workers"),
    "translate": (["-m", "gio_ada_jax.cyclegan.translate"], "--step"),
    "parity": (["-m", "gio_ada_jax.interop.parity"], "--height"),
}


def _run(args: list[str]) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=300, check=False, env={**os.environ, "JAX_PLATFORMS": "cpu"})


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_bad_flag_or_value_is_one_line_and_exit_2(command):
  args, int_flag = COMMANDS[command]
  for bad, named in (("--no_such_flag=1", "no_such_flag"), (f"{int_flag}=x", int_flag[2:])):
    result = _run(args + [bad])
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (bad, result.returncode, result.stderr[-2000:])
    assert len(lines) == 1 and named in lines[0], (bad, result.stderr[-2000:])
    assert lines[0].startswith(f"{command}: "), lines[0]  # as its other errors start
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("raised,status,said", [
    (ConfigError("config.x: fix it"), 2, "config.x: fix it"),
    (NonFiniteError("loss is nan"), 3, "loss is nan"),
    (errors.Preempted("run x is checkpointed"), 75, "run x is checkpointed"),
    (errors.Terminated(), 75, "stopped by SIGTERM before the data being written was complete "
                              "(exit status 75); rerun the same command to resume."),
    (KeyboardInterrupt(), 130, "stopped by Ctrl-C (exit status 130); rerun the same command to "
                               "resume from what was saved.")])
def test_a_user_error_or_a_stop_is_one_line_with_its_exit_status(raised, status, said, capsys,
                                                                  monkeypatch):
  """A UserError prints its message; SIGTERM while writing and Ctrl-C end every command alike."""
  def main(argv):
    del argv
    raise raised

  monkeypatch.setattr(sys, "argv", ["prog"])
  with pytest.raises(SystemExit) as exit_info:
    cli.run(main, "prog")
  assert exit_info.value.code == status
  assert capsys.readouterr().err == f"prog: {said}\n"


DROPPED_CTRL_C = """
import gc, os, signal, sys
from gio_ada_jax import cli

def main(argv):
  def interrupt_during_gc(phase, info):  # as a Ctrl-C arriving while JAX's gc callback runs
    if phase == "start":
      os.kill(os.getpid(), signal.SIGINT)
      sum(range(1000))  # the handler runs here, and Python drops what it raises
  gc.callbacks.append(interrupt_during_gc)
  gc.collect()
  gc.callbacks.remove(interrupt_during_gc)
  print("ran to its end")
  return 0

sys.argv = ["prog"]
cli.run(main, "prog")
"""


def test_a_ctrl_c_that_python_dropped_still_exits_130():
  """Python drops an exception raised in a garbage-collection callback; evaluate.py, Ctrl-C'd
  at such a moment, went on and exited 0."""
  done = subprocess.run([sys.executable, "-c", DROPPED_CTRL_C], capture_output=True, text=True,
                        timeout=120, check=False,
                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  assert done.returncode == errors.INTERRUPTED_EXIT_CODE == 130, done.stderr[-2000:]
  assert done.stdout == "ran to its end\n"
  assert done.stderr.splitlines()[-1] == (
      "prog: Ctrl-C came while Python could not stop (in garbage collection), so the command "
      "ran to its end and what it wrote is complete; exit status 130 as for any Ctrl-C.")


CONFIG_COMMANDS = {"train.py": ["train.py", "--workdir"],
                   "evaluate.py": ["evaluate.py", "--workdir"],
                   "prepare": ["-m", "gio_ada_jax.data.prepare", "--dataset=procedural",
                               "--data_dir"]}
# A --config file that does not load, what the one line says, and a command that reads it (the
# three share cli.run's flag parsing).
CONFIG_FILES = {
    "missing": (None, "the config file did not load: [Errno 2] No such file or directory",
                "train.py"),
    "a syntax error": ("def get_config(:\n", "SyntaxError: invalid syntax (", "evaluate.py"),
    "get_config raising": ("def get_config():\n  raise RuntimeError('no such scene')\n",
                           "RuntimeError: no such scene (", "prepare"),
}


@pytest.mark.parametrize("case", list(CONFIG_FILES))
def test_a_config_file_that_does_not_load_is_one_line_and_exit_2(case, tmp_path):
  """ml_collections defers a missing file's error to the config's first use and lets the file's
  own errors through as tracebacks; the commands name the file in one line instead."""
  text, said, command = CONFIG_FILES[case]
  path = tmp_path / "my_config.py"
  if text is not None:
    path.write_text(text)
  output = tmp_path / "out"
  result = _run(CONFIG_COMMANDS[command] + [str(output), f"--config={path}"])
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2, result.stderr[-2000:]
  assert len(lines) == 1 and lines[0].startswith(f"{command}: "), result.stderr[-2000:]
  assert said in lines[0] and str(path) in lines[0], lines[0]
  assert not output.exists()


def test_a_config_error_raised_by_get_config_is_one_line():
  """configs/test.py:nonsense: the variant's ConfigError, without ml_collections' traceback."""
  result = _run(["train.py", "--config=configs/test.py:nonsense", "--workdir=/nonexistent/run"])
  assert result.returncode == 2
  assert result.stderr == (
      "train.py: flag --config=configs/test.py:nonsense: config.variant='nonsense' must be "
      "'INPUT,OUTPUT' with INPUT in ('na', 'cg', 'gd', '+d', '+s', '+sd') (paper Table 2) and "
      "OUTPUT in ('na', 'ss', 'depth', 'sep', 'joint') (Table 3), e.g. config.variant = "
      "'+sd,joint'.\n")
