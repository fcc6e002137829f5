"""evaluate.py end to end on the checkpoints of a tiny training run: reports, curve, pictures,
comparisons, the export, PyTorch checkpoints, unlabelled folders, bad input."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("tensorflow_datasets")

from gio_ada_jax import models, variants  # noqa: E402
from gio_ada_jax.data import pipeline  # noqa: E402
from gio_ada_jax.data.labels import VKITTI_KITTI_10  # noqa: E402
from gio_ada_jax.eval import metrics, evaluate, reports  # noqa: E402
from gio_ada_jax.interop import convert  # noqa: E402
from gio_ada_jax.train import run_config  # noqa: E402
from tests import reference_tables  # noqa: E402
from tests.conftest import tiny_training_config  # noqa: E402

SUBPROCESS_ENV = {**os.environ, "JAX_THREEFRY_PARTITIONABLE": "false"}


def _evaluate_py(*args):
  return subprocess.run([sys.executable, "evaluate.py", *args], capture_output=True, text=True,
                        check=False, timeout=600, env=SUBPROCESS_ENV)


@pytest.fixture(scope="module")
def evaluated(trained_run, procedural_data_dir, tmp_path_factory):
  """A copy of the trained workdir after `evaluate.py --all_steps --save_predictions 2`."""
  workdir = tmp_path_factory.mktemp("evaluated") / "work"
  shutil.copytree(trained_run[1], workdir)
  result = _evaluate_py("--config", "configs/test.py", "--workdir", str(workdir),
                        f"--config.data.data_dir={procedural_data_dir}", "--all_steps",
                        "--save_predictions", "2")
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir, result.stdout


def test_evaluate_py_under_a_mesh_reports_what_pmap_reports(evaluated, procedural_data_dir,
                                                            tmp_path):
  """train.parallelism=mesh with each image's height over 2 devices: evaluate.py counts the
  confusion matrix the pmap evaluation counted, pixel for pixel."""
  workdir, _ = evaluated
  copy = tmp_path / "work"
  shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns("eval"))
  result = _evaluate_py("--config", "configs/test.py", "--workdir", str(copy),
                        f"--config.data.data_dir={procedural_data_dir}", "--step", "6",
                        "--config.train.parallelism=mesh", "--config.train.mesh_spatial=2")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Evaluating over a 2 x 2 (data x spatial) device mesh" in result.stdout
  meshed = json.loads((copy / "eval" / "step_6.json").read_text())
  pmapped = json.loads((workdir / "eval" / "step_6.json").read_text())
  assert meshed["confusion_matrix"] == pmapped["confusion_matrix"]
  assert meshed["metrics"]["num_images"] == pmapped["metrics"]["num_images"] == 4


def _labelled_pixels(data_dir: str) -> int:
  source, _ = pipeline.open_split(data_dir, "procedural/target", "validation")
  return sum(int((source[i]["label"] < 255).sum()) for i in range(len(source)))


def test_all_steps_writes_a_report_per_checkpoint_and_the_curve(evaluated, procedural_data_dir):
  workdir, stdout = evaluated
  assert "| Method | road | building |" in stdout and "| +sd,joint (step 6) |" in stdout
  eval_dir = workdir / "eval"
  for step in (3, 6):
    report = json.loads((eval_dir / f"step_{step}.json").read_text())
    # The whole split, every labelled pixel at its own resolution, exactly once.
    assert np.sum(report["confusion_matrix"]) == _labelled_pixels(procedural_data_dir)
    assert report["metrics"]["num_images"] == 4 and report["resolution"] == "label"
    again = metrics.segmentation_metrics(np.array(report["confusion_matrix"]),
                                            VKITTI_KITTI_10)
    assert report["metrics"]["miou"] == pytest.approx(again["miou"])
    assert set(report["metrics"]["depth"]) >= set(metrics.DEPTH_METRICS)
    assert "| Method | road |" in (eval_dir / f"step_{step}.md").read_text()
  assert [p["step"] for p in json.loads((eval_dir / "curve.json").read_text())] == [3, 6]
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  accumulator = event_accumulator.EventAccumulator(str(workdir / "tensorboard" / "eval"))
  accumulator.Reload()
  tags = set(accumulator.Tags()["tensors"]) | set(accumulator.Tags()["scalars"])
  assert {"eval/miou", "eval/depth_abs_rel"} <= tags


def test_pictures_are_written_at_label_resolution(evaluated):
  workdir, _ = evaluated
  folder = workdir / "eval" / "step_6" / "pictures"
  panels = sorted(folder.glob("*_panel.png"))
  segmentations = sorted(folder.glob("*_segmentation.png"))
  assert len(panels) == len(segmentations) == len(list(folder.glob("*_depth.png"))) == 2
  seg = np.asarray(Image.open(segmentations[0]))
  assert seg.shape == (32, 48, 3)  # the labels' resolution
  assert {tuple(c) for c in seg.reshape(-1, 3)} <= {
      reference_tables.CITYSCAPES_COLOURS[n] for n in reference_tables.VKITTI_KITTI_10_NAMES}
  # Two rows (segmentation; depth, since the target has depth) of three tiles.
  assert np.asarray(Image.open(panels[0])).shape == (2 * 32 + 4, 3 * 48 + 8, 3)


def test_compare_prints_mean_and_std_over_runs(evaluated, tmp_path):
  workdir, _ = evaluated
  result = _evaluate_py("compare", str(workdir / "eval" / "step_3.json"), str(workdir),
                        "--output_dir", str(tmp_path))
  assert result.returncode == 0, result.stderr[-3000:]
  row = [line for line in result.stdout.splitlines() if line.startswith("| +sd,joint")]
  assert len(row) == 1 and row[0].startswith("| +sd,joint | 2 |") and "±" in row[0]
  assert json.loads((tmp_path / "compare.json").read_text())[0]["runs"] == 2
  missing = _evaluate_py("compare", str(tmp_path / "nothing"))
  assert missing.returncode == 2
  assert "nothing: neither a report JSON nor a workdir" in missing.stderr


def test_export_and_pytorch_checkpoint_evaluate_like_the_last_checkpoint(
    evaluated, trained_run, procedural_data_dir, tmp_path):
  workdir, _ = evaluated
  config = tiny_training_config(procedural_data_dir, 6)
  want = json.loads((workdir / "eval" / "step_6.json").read_text())["confusion_matrix"]
  export_only = tmp_path / "export_only"
  shutil.copytree(workdir / "export", export_only / "export")
  shutil.copy(workdir / run_config.RECORD, export_only / run_config.RECORD)
  [report] = evaluate.evaluate(config, str(export_only), progress=False)
  assert report["checkpoint"] == "export/task_net.msgpack"
  assert report["confusion_matrix"] == want
  pth = tmp_path / "task_net.pth"
  convert.save_torch_checkpoint(convert.flax_to_torch(trained_run[0].params["task_net"],
                                                      "task_net"), str(pth))
  [report] = evaluate.evaluate(config, str(tmp_path / "torch_eval"),
                                torch_checkpoint=str(pth), progress=False)
  assert report["confusion_matrix"] == want
  assert (tmp_path / "torch_eval" / "eval" / "torch_task_net.json").exists()


def test_images_dir_predicts_unlabelled_images_at_their_own_size(trained_run,
                                                                 procedural_data_dir, tmp_path):
  folder = tmp_path / "photos"
  folder.mkdir()
  rng = np.random.default_rng(0)
  for name, size in (("a.png", (20, 30)), ("b.jpg", (25, 41))):
    Image.fromarray(rng.integers(0, 255, size + (3,), dtype=np.uint8)).save(folder / name)
  (folder / "notes.txt").write_text("not an image")
  config = tiny_training_config(procedural_data_dir, 6)
  built = models.build_models(config.model, variants.FINAL)
  weights = next(evaluate.checkpoint_weights(built, config, trained_run[1]))
  assert weights.step == 6
  found = evaluate.predict_images(config, weights, str(folder), str(tmp_path / "out"))
  assert [p.name for p in found.images] == ["a.png", "b.jpg"] and found.skipped == ["notes.txt"]
  assert np.asarray(Image.open(tmp_path / "out" / "b.jpg_segmentation.png")).shape == (25, 41, 3)
  assert np.asarray(Image.open(tmp_path / "out" / "a.png_panel.png")).shape == (20, 3 * 30 + 8,
                                                                                 3)
  (folder / "c.png").write_bytes(b"\x89PNG broken")
  with pytest.raises(ValueError, match="c.png"):
    evaluate.predict_images(config, weights, str(folder), str(tmp_path / "out"))


def test_missing_weights_and_unknown_steps_say_what_exists(trained_run, procedural_data_dir,
                                                          tmp_path):
  config = tiny_training_config(procedural_data_dir, 6)
  built = models.build_models(config.model, variants.FINAL)
  with pytest.raises(FileNotFoundError, match="train first"):
    next(evaluate.checkpoint_weights(built, config, str(tmp_path)))
  assert not (tmp_path / "checkpoints").exists()  # nothing created by looking
  with pytest.raises(FileNotFoundError, match=r"step 5.*\[3, 6\]"):
    next(evaluate.checkpoint_weights(built, config, trained_run[1], step=5))
  result = _evaluate_py("--workdir", str(tmp_path))
  assert result.returncode == 2 and "--config and --workdir are required" in result.stderr


def test_an_export_from_another_model_config_is_refused_by_name(evaluated, procedural_data_dir,
                                                              tmp_path):
  workdir, _ = evaluated
  shutil.copytree(workdir / "export", tmp_path / "export")
  config = tiny_training_config(procedural_data_dir, 6)
  config.model.width = 0.125
  run_config.record(config, str(tmp_path), {}, None)  # the record agrees; the export does not
  with pytest.raises(ValueError, match=r"model\.width \(run: 0\.0625, config: 0\.125\)"):
    evaluate.export_weights(models.build_models(config.model, variants.FINAL), config,
                             str(tmp_path))


def test_an_export_by_an_earlier_version_is_refused_naming_its_fields(evaluated,
                                                                       procedural_data_dir,
                                                                       tmp_path):
  """An earlier version's export held model.generator.use_labels / use_depth in its
  model_config.json: its model config is not this one, and evaluation says which fields."""
  workdir, _ = evaluated
  shutil.copytree(workdir / "export", tmp_path / "export")
  shutil.copy(workdir / run_config.RECORD, tmp_path / run_config.RECORD)
  path = tmp_path / "export" / "model_config.json"
  stored = json.loads(path.read_text())
  stored["generator"].update(use_labels=True, use_depth=True)
  path.write_text(json.dumps(stored))
  config = tiny_training_config(procedural_data_dir, 6)
  built = models.build_models(config.model, variants.FINAL)
  with pytest.raises(ValueError, match=r"was trained with another model config: "
                     r"model.generator.use_depth \(run: True, config: None\); "
                     r"model.generator.use_labels \(run: True, config: None\)\. Evaluate "
                     r"with the run's config\."):
    evaluate.export_weights(built, config, str(tmp_path))


def test_reports_module_reads_what_evaluate_wrote(evaluated):
  workdir, _ = evaluated
  report = reports.load_report(reports.find_report(str(workdir)))
  assert report["step"] == 6 and report["name"] == "+sd,joint"
