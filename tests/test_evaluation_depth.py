"""Evaluation's depth numbers against numpy, on a target whose depth range is not the source's.

The tiny trained run is evaluated (evaluate.evaluate, what evaluate.py calls) on a copy of the
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
import pathlib
import shutil

import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets")

from gio_ada_jax import models, trainer, variants  # noqa: E402
from gio_ada_jax.data import pipeline  # noqa: E402
from gio_ada_jax.eval import evaluate  # noqa: E402
from gio_ada_jax.train import run_config  # noqa: E402
from tests.conftest import tiny_training_config  # noqa: E402

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
