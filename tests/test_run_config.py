"""A run records its config (WORKDIR/config.json); resuming, evaluating or translating with one
that computes differently is refused by name unless --allow_config_change names the field:
probe first, then the clear error or the correct result."""

import json
import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("tensorflow_datasets")

from gio_ada_jax import config_checks  # noqa: E402
from gio_ada_jax.train import run_config  # noqa: E402
from tests.conftest import tiny_training_config  # noqa: E402

SUBPROCESS_ENV = {**os.environ, "JAX_THREEFRY_PARTITIONABLE": "false"}


def _run(script, workdir, data_dir, *extra, config="configs/test.py"):
  return subprocess.run(
      [sys.executable, script, "--config", config, "--workdir", str(workdir),
       f"--config.data.data_dir={data_dir}", *extra],
      capture_output=True, text=True, check=False, timeout=600, env=SUBPROCESS_ENV)


@pytest.fixture
def run_copy(trained_run, tmp_path):
  """A copy of the finished 6-step run (checkpoints 3 and 6, export, config.json)."""
  workdir = tmp_path / "work"
  shutil.copytree(trained_run[1], workdir)
  return workdir


def _snapshot(workdir):
  return {str(p.relative_to(workdir)): p.stat().st_mtime_ns for p in workdir.rglob("*")}


def test_a_run_records_its_whole_config(trained_run, procedural_data_dir):
  with open(os.path.join(trained_run[1], run_config.RECORD)) as f:
    recorded = json.load(f)
  expected = json.loads(tiny_training_config(procedural_data_dir, 6).to_json_best_effort())
  assert recorded == expected


# (override, field, "recorded, now") of changes that each used to go through.
CHANGES_THAT_USED_TO_GO_THROUGH = [
    # Same shapes: resumed silently into a mixed run.
    ("--config.model.task_net.input_norm=caffe", "model.task_net.input_norm",
     "'torchvision', now: 'caffe'"),
    ("--config.model.generator.residual_output=True", "model.generator.residual_output",
     "False, now: True"),
    # Other shapes: died in a Flax or orbax traceback.
    ("--config.model.width=0.125", "model.width", "0.0625, now: 0.125"),
    (None, "variant", "'+sd,joint', now: '+d,joint'"),  # --config configs/test.py:+d,joint
    # Another batch: shifted the position in the data.
    ("--config.data.global_batch=8", "data.global_batch", "4, now: 8"),
]


def test_resuming_with_a_config_that_computes_differently_is_refused_by_name(
    run_copy, procedural_data_dir):
  before = _snapshot(run_copy)
  overrides = [c for c, _, _ in CHANGES_THAT_USED_TO_GO_THROUGH if c]
  result = _run("train.py", run_copy, procedural_data_dir, "--config.train.num_steps=9",
                *overrides, config="configs/test.py:+d,joint")
  assert result.returncode == 2, result.stderr[-3000:]
  fields = [field for _, field, _ in CHANGES_THAT_USED_TO_GO_THROUGH]
  for _, field, values in CHANGES_THAT_USED_TO_GO_THROUGH:
    assert f"{field} (run: {values})" in result.stderr
  assert f"--allow_config_change={','.join(sorted(fields))}" in result.stderr
  assert "Traceback" not in result.stderr
  assert _snapshot(run_copy) == before  # nothing written, nothing restored


def test_fields_that_do_not_change_the_computation_stay_free(run_copy, procedural_data_dir):
  result = _run("train.py", run_copy, procedural_data_dir, "--config.train.num_steps=7",
                "--config.train.log_every=2", "--config.train.checkpoint_every=5",
                "--config.data.read_threads=1")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Resumed from step 6" in result.stdout and "step 7/7" in result.stdout
  assert not (run_copy / run_config.CHANGES).exists()


def test_changes_allowed_on_purpose_resume_are_recorded_and_keep_the_data_position(
    run_copy, procedural_data_dir):
  """6 steps of 4 images, then 2 steps of 8 with another input_norm, both allowed."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  result = _run("train.py", run_copy, procedural_data_dir, "--config.train.num_steps=8",
                "--config.model.task_net.input_norm=caffe", "--config.data.global_batch=8",
                "--allow_config_change=model.task_net.input_norm,data.global_batch")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Resumed from step 6" in result.stdout
  [change] = json.loads((run_copy / run_config.CHANGES).read_text())
  assert change["from_step"] == 6
  assert change["changes"] == {
      "data.global_batch": {"before": 4, "after": 8},
      "model.task_net.input_norm": {"before": "torchvision", "after": "caffe"}}
  record = json.loads((run_copy / run_config.RECORD).read_text())
  assert record["model"]["task_net"]["input_norm"] == "caffe"
  with ocp.CheckpointManager(str(run_copy / "checkpoints")) as manager:
    data = manager.restore(8, args=ocp.args.Composite(data=ocp.args.JsonRestore()))["data"]
  # 6 x 4 = 24 images = 3 batches of 8, then 2 more batches (the data kept its place).
  assert data["source"]["next_index"] == data["target"]["next_index"] == 5
  assert data["global_batch"] == 8


def test_a_misspelt_allowed_field_is_an_error(procedural_data_dir):
  config = tiny_training_config(procedural_data_dir, 6)
  with pytest.raises(config_checks.ConfigError,
                     match="model.task_net.inputnorm, which is not a field"):
    run_config.check_matches(config, "unused", "resume", ["model.task_net.inputnorm"])


def test_evaluating_with_another_config_is_refused_by_name(run_copy, procedural_data_dir):
  """The probe: another input_norm wrote depth abs_rel 17.96 instead of 0.945 as the run's."""
  result = _run("evaluate.py", run_copy, procedural_data_dir,
                "--config.model.task_net.input_norm=caffe")
  assert result.returncode == 2, result.stderr[-3000:]
  assert "model.task_net.input_norm (run: 'torchvision', now: 'caffe')" in result.stderr
  assert not (run_copy / "eval").exists()
  # Training-only settings do not change an evaluation.
  free = tiny_training_config(procedural_data_dir, 6)
  free.train.learning_rate, free.data.global_batch, free.seed = 1.0, 8, 5
  assert run_config.check_matches(free, str(run_copy), "evaluate") == {}


def test_images_dir_and_export_are_checked_too(run_copy, procedural_data_dir):
  from gio_ada_jax.eval import evaluate  # pylint: disable=g-import-not-at-top
  from gio_ada_jax import models, variants  # pylint: disable=g-import-not-at-top
  config = tiny_training_config(procedural_data_dir, 6)
  config.data.height = 64
  built = models.build_models(config.model, variants.from_config(config))
  with pytest.raises(config_checks.ConfigError, match=r"data.height \(run: 32, now: 64\)"):
    evaluate.latest_weights(built, config, str(run_copy))  # evaluate.py --images_dir
  config.data.height, config.model.dtype = 32, "bfloat16"
  with pytest.raises(config_checks.ConfigError, match="model.dtype .run: 'float32'"):
    evaluate.export_weights(built, config, str(run_copy))
  allowed = evaluate.export_weights(built, config, str(run_copy), ["model.dtype"])
  assert allowed.source == "export"


def test_which_fields_matter_for_each_use():
  """Every use compares what changes its computation; fields added later are compared."""
  recorded = {"model.width": 1.0, "train.learning_rate": 2e-4, "train.num_steps": 10,
              "train.log_every": 5, "data.data_dir": "a", "data.global_batch": 1, "seed": 0,
              "cyclegan.ngf": 64, "cyclegan.learning_rate": 2e-4, "data.source": "vkitti",
              "data.height": 375, "train.lr_schedule": "constant", "new.field": 1}
  changed = {"model.width": 0.5, "train.learning_rate": 1e-3, "train.num_steps": 20,
             "train.log_every": 1, "data.data_dir": "b", "data.global_batch": 2, "seed": 1,
             "cyclegan.ngf": 32, "cyclegan.learning_rate": 1e-3, "data.source": "synthia",
             "data.height": 512, "train.lr_schedule": "constant", "new.field": 2}
  assert set(run_config.differences(recorded, changed, "resume")) == {
      "model.width", "train.learning_rate", "data.global_batch", "seed", "cyclegan.ngf",
      "cyclegan.learning_rate", "data.source", "data.height", "new.field"}
  assert set(run_config.differences(recorded, changed, "evaluate")) == {
      "model.width", "data.source", "data.height", "new.field"}
  assert set(run_config.differences(recorded, changed, "translate")) == {
      "model.width", "cyclegan.ngf", "data.source", "new.field"}
  poly = {**recorded, "train.lr_schedule": "poly"}
  assert "train.num_steps" in run_config.differences(
      poly, {**changed, "train.lr_schedule": "poly"}, "resume")  # the schedule ends there
  assert run_config.differences(recorded, recorded, "resume") == {}
  # Pointing the source at a translated copy changes what a resumed run trains on.
  translated = {"data.source_data_dir": "/data/vkitti_cg"}
  assert run_config.differences({"data.source_data_dir": ""}, translated, "resume")
  assert not run_config.differences({"data.source_data_dir": ""}, translated, "evaluate")


def test_translate_with_another_generator_config_is_refused(tmp_path):
  """The CycleGAN's recorded config is compared before its checkpoint is read."""
  from configs import test  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "cyclegan"
  workdir.mkdir()
  config = test.get_config("cg,na")
  (workdir / run_config.RECORD).write_text(config.to_json_best_effort())
  config.cyclegan.ngf = 32
  with pytest.raises(config_checks.ConfigError, match=r"cyclegan.ngf \(run: 64, now: 32\)"):
    run_config.check_matches(config, str(workdir), "translate")
  config.cyclegan.ngf, config.cyclegan.learning_rate = 64, 1.0  # training only: free
  assert run_config.check_matches(config, str(workdir), "translate") == {}


def test_a_record_is_only_enforced_once_the_run_has_results(tmp_path, procedural_data_dir):
  """A run that stopped before its first checkpoint mixes nothing: its record is replaced."""
  workdir = tmp_path / "work"
  first = tiny_training_config(procedural_data_dir, 6)
  assert run_config.check_resume(first, str(workdir)) == {}
  run_config.record(first, str(workdir), {}, None)
  second = tiny_training_config(procedural_data_dir, 6)
  second.model.width = 0.125
  assert run_config.check_resume(second, str(workdir)) == {}
  run_config.record(second, str(workdir), {}, None)
  assert json.loads((workdir / run_config.RECORD).read_text())["model"]["width"] == 0.125
  (workdir / "checkpoints" / "3").mkdir(parents=True)
  with pytest.raises(config_checks.ConfigError, match=r"model.width \(run: 0.125, now: 0.0625"):
    run_config.check_resume(first, str(workdir))


def test_an_allowed_change_that_cannot_resume_is_not_recorded(run_copy, procedural_data_dir):
  """A change of shape, allowed on purpose, fails at the restore (naming the shapes); the
  record still holds the run's config, so rerunning with it resumes."""
  before = (run_copy / run_config.RECORD).read_text()
  result = _run("train.py", run_copy, procedural_data_dir, "--config.train.num_steps=7",
                "--config.model.width=0.125", "--allow_config_change=model.width")
  assert result.returncode == 2, result.stderr[-3000:]
  assert "other shapes than this config's" in result.stderr and "Traceback" not in result.stderr
  assert (run_copy / run_config.RECORD).read_text() == before
  assert not (run_copy / run_config.CHANGES).exists()


def test_a_run_already_past_a_shorter_length_is_refused_not_exported(run_copy,
                                                                      procedural_data_dir):
  """num_steps 3 on a run at step 6 used to say "Resumed from step 6", exit 0 and export the
  step-6 task net as a 3-step run (for the 'cg' CycleGAN stage: exit 75, "stopped by SIGTERM",
  forever); now a ConfigError naming the field, before the record or the export is touched."""
  from gio_ada_jax import trainer  # pylint: disable=g-import-not-at-top
  before = _snapshot(run_copy)
  with pytest.raises(config_checks.ConfigError) as raised:
    trainer.train_and_evaluate(tiny_training_config(procedural_data_dir, 3), str(run_copy))
  assert str(raised.value) == (
      f"{run_copy} has trained 6 steps already, past this config's 3 (train.num_steps); its "
      "checkpoints are never rewound. Set train.num_steps to at least 6 to finish it, or train "
      "in a new workdir (kept checkpoints: steps 3, 6).")
  assert _snapshot(run_copy) == before
  assert not (run_copy / "train.lock").exists()


def test_the_demo_rerun_with_another_config_is_refused_in_one_paragraph(
    trained_run, procedural_data_dir, tmp_path):
  """The demo reuses the runs of its --output_dir; with another config it used to end in a
  ConfigError traceback whose advice (--allow_config_change) it has no flag for."""
  run = tmp_path / "out" / "runs" / "na_na_seed0"
  shutil.copytree(trained_run[1], run)  # a finished run of configs/test.py (+sd,joint)
  result = subprocess.run(
      [sys.executable, "-m", "gio_ada_jax.demo", "--config", "configs/test.py", "--output_dir",
       str(tmp_path / "out"), f"--config.data.data_dir={procedural_data_dir}"],
      capture_output=True, text=True, check=False, timeout=600, env=SUBPROCESS_ENV)
  assert result.returncode == 2, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  assert result.stderr.startswith(f"demo: {run} was trained with another config; refusing to "
                                  "evaluate it with this one. Differing: variant (run: "
                                  "'+sd,joint', now: 'na,na')"), result.stderr
  assert result.stderr.rstrip().endswith(
      f"(The demo has no --allow_config_change: it reuses the runs of {tmp_path / 'out'}; give "
      "another --output_dir to train with this config.)")


def test_translate_from_a_workdir_that_holds_no_cyclegan_names_the_right_one(
    trained_run, tmp_path):
  """A 'cg' run's own workdir, or a run of another variant, used to fail at the restore with
  a structure-mismatch excerpt that blamed the config."""
  from configs import test  # pylint: disable=g-import-not-at-top
  from gio_ada_jax.cyclegan import translate  # pylint: disable=g-import-not-at-top  (TensorFlow)
  config = test.get_config("cg,na")
  cg_run = tmp_path / "cg_run"
  (cg_run / "cyclegan" / "checkpoints" / "4").mkdir(parents=True)
  with pytest.raises(translate.TranslationError) as raised:
    translate.generator_from_checkpoint(config, str(cg_run))
  assert str(raised.value) == (f"{cg_run} is a 'cg' run's workdir; its CycleGAN trains in "
                               f"{cg_run / 'cyclegan'}: pass --cyclegan_workdir="
                               f"{cg_run / 'cyclegan'}.")
  with pytest.raises(translate.TranslationError) as raised:
    translate.generator_from_checkpoint(config, trained_run[1])
  assert str(raised.value) == (
      f"{trained_run[1]} holds a '+sd,joint' run, which trains no CycleGAN (its checkpoints hold "
      "GIO-Ada's networks); give the CycleGAN workdir of a 'cg' run (WORKDIR/cyclegan) or a "
      "PyTorch generator (--torch_generator).")


def test_a_lost_record_is_refused_when_the_workdir_holds_results(run_copy, procedural_data_dir):
  """The probe: config.json left behind when the checkpoints were copied; evaluating with
  another input_norm then went unchecked (exit 0, a wrong report)."""
  (run_copy / run_config.RECORD).unlink()
  config = tiny_training_config(procedural_data_dir, 6)
  with pytest.raises(config_checks.ConfigError, match=r"config.json is missing, but .* holds a "
                     r"run's results \(checkpoints or an export\), so whether this config is "
                     r"the run's cannot be checked. Put the file back"):
    run_config.check_matches(config, str(run_copy), "evaluate")
  with pytest.raises(config_checks.ConfigError, match="config.json is missing"):
    run_config.check_resume(config, str(run_copy))
