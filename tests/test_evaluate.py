"""evaluate.py end to end on the checkpoints of a tiny training run: reports, curve, pictures,
comparisons, the export, PyTorch checkpoints, unlabelled folders, bad input.

Depth numbers against numpy, on a target whose depth range is not the source's: the tiny
trained run is evaluated (evaluate.evaluate, what evaluate.py calls) on a copy of the
prepared procedural data whose target records a depth maximum of its own: its farthest measured
point, as a KITTI-like dataset without a far clip would (about 430 m; the source's is the far
clip, 655.35 m). Predictions are in the source's normalised units, ground truth in the target's, so
a swapped, shared or mis-scaled conversion moves every metric. The expected values are computed
here from the raw stored depths (uint16 centimetres) and G_task's raw output, with the metric
definitions written out (monodepth's), not with the library's metric functions. The tiny
run predicts nearly the same depth everywhere; one case rescales its depth head (written as an
export) so that the predictions spread, half of them beyond the source's range.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("tensorflow_datasets")

from gio_ada_jax import models, trainer, variants  # noqa: E402
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
  assert [p.name for p in found.images] == ["a.png", "b.jpg"] and found.skipped == [
      "notes.txt (not an image by its suffix)"]
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


# ------------------------------------------------------ depth on another depth range


FAR_CLIP_CM = 65535  # the far clip (sky) of the stored depths: never scored


def _recorded_depth_maxima(data_dir: pathlib.Path, domain: str) -> list[pathlib.Path]:
  """The metadata files of a prepared procedural domain that record its depth maximum."""
  found = [p for p in (data_dir / "procedural" / domain).rglob("*.json")
           if "depth_max_cm" in p.read_text()]
  assert found, f"no metadata with depth_max_cm under {data_dir / 'procedural' / domain}"
  return found


@pytest.fixture(scope="module")
def kitti_like_target(procedural_data_dir, tmp_path_factory):
  """(data dir, target's recorded maximum in cm): the prepared data, the target recording its
  farthest measured point (below the far clip) as the depth that normalises to 1."""
  data_dir = tmp_path_factory.mktemp("depth_ranges") / "data"
  shutil.copytree(procedural_data_dir, data_dir)
  measured = max(int(np.max(np.where(e["depth"] == FAR_CLIP_CM, 0, e["depth"])))
                 for split in ("train", "validation")
                 for e in _raw_examples(str(data_dir), "procedural/target", split))
  for path in _recorded_depth_maxima(data_dir, "target"):
    metadata = json.loads(path.read_text())
    metadata["depth_max_cm"] = measured
    path.write_text(json.dumps(metadata))
  return str(data_dir), measured


def _raw_examples(data_dir: str, dataset: str, split: str) -> list[dict]:
  source, _ = pipeline.open_split(data_dir, dataset, split)
  return [source[i] for i in range(len(source))]


def _expected_depth_metrics(predicted_m: list[np.ndarray], true_cm: list[np.ndarray],
                            min_m: float, max_m: float) -> dict[str, float]:
  """monodepth's metrics, per image then averaged over images with scored pixels."""
  per_image = []
  for pred, cm in zip(predicted_m, true_cm):
    true = cm.astype(np.float64) / 100.0
    valid = (cm > 0) & (cm != FAR_CLIP_CM) & (true >= min_m)
    if max_m > 0:
      valid &= true <= max_m
    if not valid.any():
      continue
    t = true[valid]
    p = np.clip(pred.astype(np.float64)[valid], min_m, max_m if max_m > 0 else np.inf)
    ratio = np.maximum(p / t, t / p)
    per_image.append({
        "abs_rel": np.mean(np.abs(p - t) / t), "sq_rel": np.mean((p - t)**2 / t),
        "rmse": np.sqrt(np.mean((p - t)**2)),
        "rmse_log": np.sqrt(np.mean((np.log(p) - np.log(t))**2)),
        "delta_1.25": np.mean(ratio < 1.25), "delta_1.25^2": np.mean(ratio < 1.25**2),
        "delta_1.25^3": np.mean(ratio < 1.25**3)})
  return {k: float(np.mean([m[k] for m in per_image])) for k in per_image[0]}


# (eval.depth_min_m, eval.depth_max_m, eval.at_label_resolution, eval.per_device_batch, whether
# the weights are the run's export with the depth head rescaled so that the predictions spread
# and about half of them lie beyond the source's range, 1); the procedural labels have the
# network's input size, so both resolutions score the same pixels.
CASES = {"defaults": (1e-3, 0.0, True, 1, False), "capped": (4.0, 40.0, True, 2, False),
         "input_resolution": (1e-3, 0.0, False, 1, False),
         "beyond_the_source_range": (1e-3, 0.0, True, 1, True)}


def _rescaled_depth_head(params, scale: float, offset: float):
  """`params` whose depth output is `scale` * the output + `offset` everywhere (the head's
  ASPP branches are linear and summed, and bilinear upsampling keeps affine maps)."""
  head = dict(params["depth_head"])
  for name in head:
    head[name] = {"kernel": head[name]["kernel"] * scale,
                  "bias": head[name]["bias"] * scale + offset / len(head)}
  return {**params, "depth_head": head}


@pytest.mark.parametrize(
    "min_m,max_m,at_label_resolution,per_device_batch,shifted", CASES.values(), ids=CASES.keys())
def test_depth_metrics_equal_numpy_on_another_depth_range(
    trained_run, kitti_like_target, tmp_path, min_m, max_m, at_label_resolution,
    per_device_batch, shifted):
  data_dir, target_max_cm = kitti_like_target
  config = tiny_training_config(data_dir, 6)
  config.eval.depth_min_m, config.eval.depth_max_m = min_m, max_m
  config.eval.at_label_resolution = at_label_resolution
  config.eval.per_device_batch = per_device_batch
  # The source's depth unit: the maximum over every stored source depth (the far clip, where
  # the sky shows), which is what the training targets were divided by.
  source_max_cm = max(int(e["depth"].max()) for split in ("train", "validation")
                      for e in _raw_examples(data_dir, "procedural/source", split))
  assert source_max_cm > 1.4 * target_max_cm  # the two ranges really differ
  built = models.build_models(config.model, variants.from_config(config))
  params = next(evaluate.checkpoint_weights(built, config, trained_run[1], step=6)).params
  examples = _raw_examples(data_dir, "procedural/target", config.data.target_eval_split)
  assert examples[0]["depth"].shape == (config.data.height, config.data.width)  # no resizing
  images = np.stack([e["image"].astype(np.float32) / 127.5 - 1.0 for e in examples])
  _, predicted = built.task_net.apply({"params": params}, images)  # [N, H, W, 1], normalised
  scored = np.stack([(e["depth"] > 0) & (e["depth"] != FAR_CLIP_CM) for e in examples])
  if shifted:
    values = np.asarray(predicted)[..., 0][scored]  # the tiny run's are all close to 1
    scale = 1.0 / (np.percentile(values, 90) - np.percentile(values, 10))
    params = _rescaled_depth_head(params, scale, 1.0 - scale * float(np.median(values)))
    _, predicted = built.task_net.apply({"params": params}, images)
    assert 0.2 < float(np.mean(np.asarray(predicted)[..., 0][scored] > 1.0)) < 0.8
    workdir = tmp_path / "export_only"  # evaluated from its export, no checkpoints
    trainer.export_task_net(params, config.model, str(workdir / "export"))
    run_config.record(config, str(workdir), {}, None)  # as the run that exports records it
    [report] = evaluate.evaluate(config, str(workdir), progress=False)
  else:
    workdir = tmp_path / "work"
    shutil.copytree(trained_run[1], workdir)
    [report] = evaluate.evaluate(config, str(workdir), step=6, progress=False)
  predicted_m = [np.asarray(p[..., 0]) * source_max_cm / 100.0 for p in predicted]
  expected = _expected_depth_metrics(predicted_m, [e["depth"] for e in examples], min_m, max_m)

  assert report["resolution"] == ("label" if at_label_resolution else "input")
  assert report["depth_range_m"] == [min_m, max_m]
  reported = report["metrics"]["depth"]
  assert reported["num_images"] == len(examples)
  assert set(reported) - {"num_images"} == set(expected)
  for name, value in expected.items():
    assert reported[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
  # Not vacuous: the metrics are not at a bound (all pixels in or out of a threshold) ...
  assert 0 < expected["delta_1.25^2"] < 1 and expected["abs_rel"] > 0.05
  # ... and the target's own unit would have given other numbers.
  wrong = _expected_depth_metrics([p * target_max_cm / source_max_cm for p in predicted_m],
                                  [e["depth"] for e in examples], min_m, max_m)
  assert all(wrong[k] != pytest.approx(expected[k], rel=1e-2) for k in ("abs_rel", "rmse"))
