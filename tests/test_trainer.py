"""The training loop on the tiny procedural benchmark: logs, checkpoints, exact resume."""

import subprocess
import sys

import jax
import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets")

from configs import test as test_config  # noqa: E402
from gio_ada_jax import trainer  # noqa: E402
from gio_ada_jax.data import prepare  # noqa: E402


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("data")
  prepare.prepare("procedural", str(path), test_config.get_config(), num_workers=1)
  return str(path)


def _config(data_dir, num_steps):
  config = test_config.get_config()
  config.data.data_dir = data_dir
  config.train.num_steps = num_steps
  return config


def _assert_same_params(a, b):
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_resumed_run_ends_exactly_like_an_uninterrupted_one(data_dir, tmp_path, capsys):
  straight = trainer.train_and_evaluate(_config(data_dir, 6), str(tmp_path / "straight"))
  trainer.train_and_evaluate(_config(data_dir, 3), str(tmp_path / "resumed"))
  resumed = trainer.train_and_evaluate(_config(data_dir, 6), str(tmp_path / "resumed"))
  assert int(resumed.step) == int(straight.step) == 6
  _assert_same_params(resumed, straight)
  printed = capsys.readouterr().out
  assert "step 1/6" in printed and "steps/s" in printed and "ETA" in printed
  assert "step 4/6" in printed  # the resumed run starts after the checkpoint


def test_non_finite_metrics_stop_with_their_names():
  with pytest.raises(trainer.NonFiniteError, match="loss_d_img.*grad_norm_task_net|"
                                                   "grad_norm_task_net.*loss_d_img"):
    trainer.check_finite({"loss_d_img": float("nan"), "grad_norm_task_net": float("inf"),
                          "loss_seg": 1.0}, step=7)


def test_train_py_runs_end_to_end_and_writes_checkpoints(data_dir, tmp_path):
  workdir = tmp_path / "work"
  result = subprocess.run(
      [sys.executable, "train.py", "--config", "configs/test.py", "--workdir", str(workdir),
       f"--config.data.data_dir={data_dir}", "--config.train.num_steps=2"],
      capture_output=True, text=True, check=False, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "step 2/2" in result.stdout
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == ["2"]
