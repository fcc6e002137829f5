"""eval.every_steps: train_and_evaluate evaluates G_task during training and writes what
evaluate.py writes for those steps; resumed and SIGTERM-stopped runs; the setting's check."""

import json
import os
import shutil
import signal

import ml_collections
import pytest

pytest.importorskip("tensorflow_datasets")

from gio_ada_jax import config_checks  # noqa: E402
from gio_ada_jax import workdir as workdir_lib  # noqa: E402
from gio_ada_jax.data import pipeline  # noqa: E402
from gio_ada_jax.eval import evaluate  # noqa: E402
from gio_ada_jax import trainer  # noqa: E402
from gio_ada_jax.train import loop as loop_lib, step as train_step  # noqa: E402
from tests.conftest import tiny_training_config  # noqa: E402


def _config(data_dir: str, num_steps: int, every_steps: int):
  config = tiny_training_config(data_dir, num_steps)  # checkpoints every 3 steps
  config.eval.every_steps = every_steps
  return config


def _reports(workdir) -> dict[str, dict]:
  """{file name: report} of the step reports in workdir/eval."""
  eval_dir = workdir_lib.evaluation(str(workdir))
  return {name: json.loads(open(os.path.join(eval_dir, name)).read())
          for name in sorted(os.listdir(eval_dir))
          if name.startswith("step_") and name.endswith(".json")}


def _curve_steps(workdir) -> list[int]:
  with open(os.path.join(workdir_lib.evaluation(str(workdir)), "curve.json")) as f:
    return [point["step"] for point in json.load(f)]


def _evaluated_checkpoints(stdout: str) -> list[str]:
  """What the printed report lines name, in order ("checkpoints/3", ...)."""
  return [line.split(" (", 1)[1].split("): mIoU", 1)[0] for line in stdout.splitlines()
          if "): mIoU " in line]


def _without_speed(report: dict) -> dict:
  return {k: v for k, v in report.items() if k != "images_per_s"}


@pytest.fixture(scope="module")
def in_loop_run(procedural_data_dir, tmp_path_factory):
  """A 6-step run with eval.every_steps=3: (workdir, the reports training wrote, its curve's
  steps, whether the eval TensorBoard folder holds events, evaluate.py's reports afterwards of
  checkpoints 3 and 6, with eval.every_steps=0)."""
  workdir = tmp_path_factory.mktemp("in_loop") / "work"
  assert trainer.train_and_evaluate(_config(procedural_data_dir, 6, 3), str(workdir)) is not None
  written = _reports(workdir)
  curve = _curve_steps(workdir)
  events = os.listdir(workdir_lib.tensorboard(str(workdir), "eval"))
  # eval.every_steps differs from the run's (3): it computes nothing, so evaluate accepts it.
  afterwards = evaluate.evaluate(_config(procedural_data_dir, 6, 0), str(workdir),
                                 all_steps=True, progress=False)
  return workdir, written, curve, events, afterwards


def test_in_loop_reports_equal_evaluate_py_of_the_checkpoints(in_loop_run):
  _, written, curve, events, afterwards = in_loop_run
  assert sorted(written) == ["step_3.json", "step_6.json"]
  assert [r["step"] for r in afterwards] == [3, 6]
  for report in afterwards:
    during = written[f"step_{report['step']}.json"]
    assert during["checkpoint"] == f"checkpoints/{report['step']}"
    assert during["metrics"]["num_images"] == 4
    assert _without_speed(during) == _without_speed(report)  # metrics, confusion, names
  assert curve == [3, 6]
  assert any(name.startswith("events.out.tfevents") for name in events), events


def test_nothing_is_evaluated_in_training_by_default(trained_run):
  assert not os.path.exists(workdir_lib.evaluation(trained_run[1]))
  assert not os.path.exists(workdir_lib.tensorboard(trained_run[1], "eval"))


def _sigterm_at_call(monkeypatch, call: int) -> None:
  """The trainer's step raises SIGTERM in this process at its `call`-th call (1-based)."""
  make = train_step.make_p_train_step

  def make_stopping(*args, **kwargs):
    p_step, calls = make(*args, **kwargs), []

    def stepping(state, batch):
      calls.append(1)
      if len(calls) == call:
        signal.raise_signal(signal.SIGTERM)
      return p_step(state, batch)

    return stepping

  monkeypatch.setattr(train_step, "make_p_train_step", make_stopping)


def test_a_preempted_then_resumed_run_evaluates_each_later_step_once(
    in_loop_run, procedural_data_dir, tmp_path, monkeypatch, capsys):
  """Resumed from step 6 (more steps, every_steps 3 -> 1: neither blocks the resume), the run
  evaluates step 7 from memory (no checkpoint 7), skips step 8 where SIGTERM stops it (after its
  checkpoint), then, resumed, evaluates steps 9 and 10 and never 3 or 6 again."""
  workdir = tmp_path / "work"
  shutil.copytree(in_loop_run[0], workdir)
  before = _reports(workdir)
  config = _config(procedural_data_dir, 10, 1)
  _sigterm_at_call(monkeypatch, 2)
  assert trainer.train_and_evaluate(config, str(workdir)) is None
  assert _evaluated_checkpoints(capsys.readouterr().out) == ["in memory at training step 7"]
  assert os.path.isdir(os.path.join(workdir_lib.checkpoints(str(workdir)), "8"))
  monkeypatch.undo()
  assert trainer.train_and_evaluate(config, str(workdir)) is not None
  assert _evaluated_checkpoints(capsys.readouterr().out) == ["checkpoints/9", "checkpoints/10"]
  after = _reports(workdir)
  assert sorted(after) == ["step_10.json", "step_3.json", "step_6.json", "step_7.json",
                           "step_9.json"]
  assert after["step_7.json"]["checkpoint"] == "in memory at training step 7"
  assert {k: after[k] for k in before} == before
  assert _curve_steps(workdir) == [3, 6, 7, 9, 10]


def test_every_steps_past_the_end_evaluates_the_last_step_only():
  assert [s for s in range(1, 7) if loop_lib.evaluates_at(s, 6, 10)] == [6]
  assert [s for s in range(1, 7) if loop_lib.evaluates_at(s, 6, 4)] == [4, 6]
  assert not any(loop_lib.evaluates_at(s, 6, 0) for s in range(1, 7))


@pytest.mark.parametrize("value,problem", [
    (-1, "eval.every_steps=-1: must be at least 0"),
    (True, "eval.every_steps=True: must be a whole number"),
    (2.5, "eval.every_steps=2.5: must be a whole number"),
])
def test_a_bad_every_steps_is_named_before_anything_runs(value, problem, tmp_path):
  config = ml_collections.ConfigDict(tiny_training_config("/nonexistent", 6).to_dict(),
                                     type_safe=False)  # as a config file could build it
  config.eval.every_steps = value
  workdir = tmp_path / "work"
  with pytest.raises(config_checks.ConfigError, match=rf"{problem} \(steps between evaluations "
                     "during training; 0 = none\\)"):
    trainer.train_and_evaluate(config, str(workdir))
  assert not workdir.exists()


def test_a_missing_evaluation_split_stops_the_run_before_it_trains(procedural_data_dir,
                                                                   tmp_path):
  config = _config(procedural_data_dir, 6, 3)
  config.data.target_eval_split = "nosuch"
  with pytest.raises(pipeline.DatasetUnusable, match="dataset 'procedural/target' has no split "
                     r"'nosuch'; it has \['train', 'validation'\]"):
    trainer.train_and_evaluate(config, str(tmp_path / "work"))
  assert not os.path.exists(workdir_lib.checkpoints(str(tmp_path / "work")))
