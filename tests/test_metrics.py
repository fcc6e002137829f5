"""Evaluation: metric definitions, device counting, the whole-split loop, reports, pictures."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gio_ada_jax import parallel
from gio_ada_jax.data import pipeline
from gio_ada_jax.data.labels import MIOU13_CLASSES, SYNTHIA_CITYSCAPES_16, LabelSpace
from gio_ada_jax.eval import metrics as metrics_lib, reports
from gio_ada_jax.models import TaskNet
from gio_ada_jax.models.layers import resize_bilinear_align_corners

THREE = LabelSpace("three", ("a", "b", "c"), ((1, 1, 1), (2, 2, 2), (3, 3, 3)))


def _fast_hist(labels, predictions, n):
  """AdaptSegNet's compute_iou.fast_hist: rows = ground truth."""
  labels, predictions = np.asarray(labels).ravel(), np.asarray(predictions).ravel()
  k = (labels >= 0) & (labels < n)
  return np.bincount(n * labels[k].astype(int) + predictions[k], minlength=n**2).reshape(n, n)


def test_iou_by_hand_absent_classes_are_nan_and_left_out_of_the_mean():
  confusion = np.array([[5, 1, 0],
                        [2, 3, 0],
                        [0, 0, 0]])
  metrics = metrics_lib.segmentation_metrics(confusion, THREE)
  assert metrics["iou"]["a"] == pytest.approx(5 / (6 + 7 - 5))
  assert metrics["iou"]["b"] == pytest.approx(3 / (5 + 4 - 3))
  assert math.isnan(metrics["iou"]["c"])  # in neither ground truth nor prediction
  assert metrics["miou"] == pytest.approx((5 / 8 + 3 / 6) / 2)
  assert metrics["pixel_accuracy"] == pytest.approx(8 / 11)
  assert metrics["mean_accuracy"] == pytest.approx((5 / 6 + 3 / 5) / 2)
  assert "miou13" not in metrics


def test_a_class_only_predicted_counts_as_zero():
  confusion = np.array([[4, 2, 0], [0, 0, 0], [0, 0, 3]])  # b predicted, never true
  metrics = metrics_lib.segmentation_metrics(confusion, THREE)
  assert metrics["iou"]["b"] == 0.0
  assert metrics["miou"] == pytest.approx((4 / 6 + 0 + 1) / 3)


def test_miou13_is_the_mean_of_13_of_the_16_ious_of_the_same_matrix():
  rng = np.random.default_rng(0)
  confusion = rng.integers(0, 50, (16, 16)) + np.diag(rng.integers(100, 500, 16))
  metrics = metrics_lib.segmentation_metrics(confusion, SYNTHIA_CITYSCAPES_16)
  ious = np.array(list(metrics["iou"].values()))
  not_wall_fence_pole = [0, 1, 2, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]  # GIO-Ada Table 4, mIoU*
  assert metrics["miou13"] == pytest.approx(ious[not_wall_fence_pole].mean())
  assert metrics["miou"] == pytest.approx(ious.mean())
  assert {SYNTHIA_CITYSCAPES_16.class_names[i] for i in set(range(16)) - set(MIOU13_CLASSES)
          } == {"wall", "fence", "pole"}  # the table itself: tests/test_labels.py
  worse = confusion.copy()
  worse[3, 3] = 0  # wall: changes mIoU, not mIoU*
  changed = metrics_lib.segmentation_metrics(worse, SYNTHIA_CITYSCAPES_16)
  assert changed["miou"] < metrics["miou"] and changed["miou13"] == metrics["miou13"]


def test_wrong_matrix_size_is_refused():
  with pytest.raises(ValueError, match="three"):
    metrics_lib.segmentation_metrics(np.zeros((4, 4)), THREE)


def test_device_confusion_matrix_equals_fast_hist_and_masks_padding():
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 4, (2, 5, 7))
  labels[rng.random(labels.shape) < 0.2] = 255
  predictions = rng.integers(0, 4, (2, 5, 7))
  got = metrics_lib.confusion_matrix(jnp.asarray(labels), jnp.asarray(predictions), 4)
  np.testing.assert_array_equal(np.asarray(got), _fast_hist(labels, predictions, 4))
  weights = jnp.asarray([1.0, 0.0])[:, None, None]  # second image is padding
  got = metrics_lib.confusion_matrix(jnp.asarray(labels), jnp.asarray(predictions), 4, weights)
  np.testing.assert_array_equal(np.asarray(got), _fast_hist(labels[:1], predictions[:1], 4))


def test_upsampling_to_label_resolution_matches_align_corners_resize_per_example():
  x = jax.random.normal(jax.random.key(0), (4, 4, 6, 3))
  sizes = jnp.asarray([[9, 13], [7, 10], [4, 6], [1, 1]])  # larger, same, a single pixel
  out = metrics_lib.upsample_to_label_resolution(x, sizes, (9, 13))
  for n, (h, w) in enumerate(np.asarray(sizes)):
    want = resize_bilinear_align_corners(x[n:n + 1], int(h), int(w))[0]
    np.testing.assert_allclose(np.asarray(out[n, :h, :w]), np.asarray(want), atol=1e-5)
    assert not np.asarray(out[n, h:]).any() and not np.asarray(out[n, :, w:]).any()


def _eigen_reference(pred, gt, mask, min_m, max_m=None):
  """The standard per-image depth errors (monodepth's compute_errors) in numpy; `max_m`: the
  cap (true depths above it are not scored, predictions are clipped to it)."""
  valid = mask & (gt >= min_m) & (gt <= (np.inf if max_m is None else max_m))
  p, g = np.clip(pred[valid], min_m, max_m), gt[valid]
  ratio = np.maximum(p / g, g / p)
  return [np.mean(np.abs(p - g) / g), np.mean((p - g)**2 / g), np.sqrt(np.mean((p - g)**2)),
          np.sqrt(np.mean((np.log(p) - np.log(g))**2)), np.mean(ratio < 1.25),
          np.mean(ratio < 1.25**2), np.mean(ratio < 1.25**3)]


def test_depth_errors_follow_the_standard_definitions():
  rng = np.random.default_rng(2)
  gt = rng.uniform(1, 50, (2, 6, 8, 1)).astype(np.float32)
  pred = (gt * rng.uniform(0.6, 1.6, gt.shape)).astype(np.float32)
  pred[0, 0, 0] = -3.0  # clipped to the minimum
  mask = rng.random(gt.shape) < 0.8
  mask[1] = False  # no valid pixel: not counted
  errors, counted = metrics_lib.depth_errors(jnp.asarray(pred), jnp.asarray(gt),
                                            jnp.asarray(mask, jnp.float32), 1e-3, 0.0)
  np.testing.assert_allclose(np.asarray(errors[0]),
                             _eigen_reference(pred[0], gt[0], mask[0], 1e-3), rtol=1e-5)
  assert np.asarray(counted).tolist() == [True, False]
  sums = np.asarray(errors[0]) * 2
  metrics = metrics_lib.depth_metrics(sums, 2)
  assert metrics["abs_rel"] == pytest.approx(float(errors[0, 0]))


def test_the_depth_cap_drops_farther_ground_truth_and_clips_predictions():
  """eval.depth_max_m > 0 (KITTI's 80 m custom): true depths above it are not scored and
  predictions are clipped to it; without the cap both count."""
  rng = np.random.default_rng(3)
  gt = rng.uniform(1, 60, (1, 8, 8, 1)).astype(np.float32)
  pred = (gt * rng.uniform(0.5, 2.0, gt.shape)).astype(np.float32)
  mask = np.ones(gt.shape, bool)
  assert (gt > 30).any() and (pred[gt <= 30] > 30).any()  # both branches are exercised
  capped, _ = metrics_lib.depth_errors(jnp.asarray(pred), jnp.asarray(gt),
                                      jnp.asarray(mask, jnp.float32), 1e-3, 30.0)
  np.testing.assert_allclose(np.asarray(capped[0]),
                             _eigen_reference(pred[0], gt[0], mask[0], 1e-3, 30.0), rtol=1e-5)
  uncapped, _ = metrics_lib.depth_errors(jnp.asarray(pred), jnp.asarray(gt),
                                        jnp.asarray(mask, jnp.float32), 1e-3, 0.0)
  np.testing.assert_allclose(np.asarray(uncapped[0]),
                             _eigen_reference(pred[0], gt[0], mask[0], 1e-3), rtol=1e-5)
  assert not np.allclose(np.asarray(capped[0]), np.asarray(uncapped[0]))


# ------------------------------------------------------------------- the loop over a split

NUM_CLASSES = 3
LABEL_SIZES = [(11, 17), (9, 14), (11, 15), (10, 17), (8, 12), (11, 17), (9, 16)]  # 7 images


def _labelled_example(index: int, size) -> dict:
  rng = np.random.default_rng(100 + index)
  label = rng.integers(0, NUM_CLASSES, size).astype(np.uint8)
  label[0, :3] = 255
  depth = rng.integers(100, 3000, size).astype(np.uint16)
  depth[1, :2] = 0
  return {"id": f"ex{index}", "image": rng.integers(0, 255, size + (3,)).astype(np.uint8),
          "label": label[..., None], "depth": depth}


SPLIT = [_labelled_example(i, s) for i, s in enumerate(LABEL_SIZES)]
SPEC = pipeline.Preprocessing(8, 12, depth_max_cm=3000.0)
LABEL_SHAPE = (11, 17)
DEPTH = metrics_lib.DepthScales(predicted_m=20.0, true_m=30.0, min_m=1e-3, max_m=0.0)


@pytest.fixture(scope="module")
def tiny_task_net():
  net = TaskNet(num_classes=NUM_CLASSES, width=1 / 16, input_norm="none")
  params = jax.jit(net.init)(jax.random.key(3), jnp.zeros((1, 8, 12, 3)))["params"]
  return net, params


def _run(net, params, devices, per_device_batch, num_pictures=0, layout=None):
  layout = parallel.PmapLayout(tuple(devices)) if layout is None else layout
  p_eval = metrics_lib.make_split_evaluator(net, NUM_CLASSES, DEPTH, layout)
  batches = pipeline.eval_batches(SPLIT, SPEC, per_device_batch=per_device_batch,
                                  label_size=LABEL_SHAPE, local_devices=layout.local_rows,
                                  process_index=0, process_count=1)
  return metrics_lib.evaluate_split(p_eval, params, batches, num_examples=len(SPLIT),
                                   num_classes=NUM_CLASSES, with_depth=True, layout=layout,
                                   num_pictures=num_pictures, progress=False)


def _expected(net, params):
  """Each image alone: network, align_corners upsampling to its size, argmax, fast_hist."""
  confusion = np.zeros((NUM_CLASSES,) * 2, np.int64)
  sums = np.zeros(7)
  for example in SPLIT:
    inputs = pipeline.preprocess(example, SPEC, None)
    # The heads' stride-8 outputs, upsampled once to the label's size (AdaptSegNet, ADVENT).
    logits, depth = net.apply({"params": params}, jnp.asarray(inputs["image"])[None],
                              upsample_to_input=False)
    assert logits.shape[1] < SPEC.height
    size = example["label"].shape[:2]
    prediction = np.asarray(jnp.argmax(resize_bilinear_align_corners(logits, *size), -1))[0]
    confusion += _fast_hist(example["label"][..., 0], prediction, NUM_CLASSES)
    depth = np.asarray(resize_bilinear_align_corners(depth, *size))[0] * DEPTH.predicted_m
    gt = example["depth"].astype(np.float32)[..., None] / 3000 * DEPTH.true_m
    sums += _eigen_reference(depth, gt, example["depth"][..., None] > 0, DEPTH.min_m)
  return confusion, sums


def test_every_image_of_a_split_is_counted_once_at_its_own_resolution(tiny_task_net):
  net, params = tiny_task_net
  result = _run(net, params, jax.local_devices(), per_device_batch=1)  # 7 = 4 + 3 padded
  confusion, sums = _expected(net, params)
  np.testing.assert_array_equal(result.confusion, confusion)
  assert result.confusion.sum() == sum((e["label"] < 255).sum() for e in SPLIT)
  assert result.num_images == result.depth_images == 7
  np.testing.assert_allclose(result.depth_sums, sums, rtol=2e-4)


@pytest.mark.parametrize("shape", [(4, 1), (2, 2), (1, 4)])
def test_a_mesh_counts_what_pmap_counts(tiny_task_net, shape):
  """Evaluation under jit over a (data, spatial) mesh: the same totals and pictures as pmap,
  the spatial axis splitting each 8-row input (labels of 11 rows stay whole per example)."""
  net, params = tiny_task_net
  layout = parallel.MeshLayout(parallel.make_mesh(*shape))
  per_row = 4 // shape[0]  # 4 images a step either way
  meshed = _run(net, params, None, per_device_batch=per_row, num_pictures=3, layout=layout)
  pmapped = _run(net, params, jax.local_devices(), per_device_batch=1, num_pictures=3)
  np.testing.assert_array_equal(meshed.confusion, pmapped.confusion)
  np.testing.assert_allclose(meshed.depth_sums, pmapped.depth_sums, rtol=1e-5)
  assert meshed.num_images == pmapped.num_images == len(SPLIT)
  assert [p["index"] for p in meshed.pictures] == [p["index"] for p in pmapped.pictures]
  for ours, theirs in zip(meshed.pictures, pmapped.pictures):
    np.testing.assert_array_equal(ours["prediction"], theirs["prediction"])


def test_several_devices_give_what_one_device_gives(tiny_task_net, monkeypatch):
  net, params = tiny_task_net
  assert jax.local_device_count() >= 2, "run with XLA_FLAGS=--xla_force_host_platform_..."
  many = _run(net, params, jax.local_devices(), per_device_batch=2)
  one = _run(net, params, jax.local_devices()[:1], per_device_batch=3)
  np.testing.assert_array_equal(many.confusion, one.confusion)
  np.testing.assert_allclose(many.depth_sums, one.depth_sums, rtol=1e-6)
  # Moving the int32 device counts to the host after every step changes nothing.
  monkeypatch.setattr(metrics_lib, "_INT32_MAX", 1)
  flushed = _run(net, params, jax.local_devices(), per_device_batch=1)
  np.testing.assert_array_equal(flushed.confusion, one.confusion)
  np.testing.assert_allclose(flushed.depth_sums, one.depth_sums, rtol=1e-6)
  assert flushed.num_images == flushed.depth_images == one.num_images == 7


def test_pictures_keep_the_first_images_at_their_own_size(tiny_task_net):
  net, params = tiny_task_net
  result = _run(net, params, jax.local_devices()[:2], per_device_batch=1, num_pictures=3)
  assert [p["index"] for p in result.pictures] == [0, 1, 2]
  assert [p["prediction"].shape for p in result.pictures] == LABEL_SIZES[:3]
  np.testing.assert_array_equal(result.pictures[1]["label"], SPLIT[1]["label"][..., 0])


def test_flush_interval_keeps_int32_counts_below_overflow():
  assert metrics_lib.flush_interval(2048 * 1024 * 8) == 127  # 8 Cityscapes images per step
  assert metrics_lib.flush_interval(2**31) == 1


# ------------------------------------------------------------------------------- reports


def _report(name, ious, step=1, miou13=None):
  metrics = {"iou": dict(zip("abc", ious)), "miou": float(np.nanmean(ious)),
             "pixel_accuracy": 0.5, "mean_accuracy": 0.5, "num_images": 4}
  if miou13 is not None:
    metrics["miou13"] = miou13
  return reports.make_report(name=name, variant="+sd,joint", checkpoint=f"checkpoints/{step}",
                             step=step, dataset="d", split="validation", class_names="abc",
                             resolution="label", metrics=metrics, confusion=np.eye(3),
                             seconds=2.0)


def test_table_has_one_column_per_class_then_miou():
  report = _report("GIO-Ada", [0.5, math.nan, 0.25])
  lines = reports.markdown_table([report]).splitlines()
  assert lines[0] == "| Method | a | b | c | mIoU |"
  assert lines[2] == "| GIO-Ada (step 1) | 50.0 | – | 25.0 | 37.5 |"
  assert report["metrics"]["iou"]["b"] is None  # NaN is null in the JSON
  json.dumps(report, allow_nan=False)


def test_compare_gives_mean_and_sample_std_per_variant():
  rows = reports.compare([_report("na,na", [0.1, 0.2, 0.3]), _report("+sd,joint", [0.5, 0.6, 0.7]),
                          _report("na,na", [0.3, 0.2, math.nan])])
  assert [r["name"] for r in rows] == ["na,na", "+sd,joint"]
  assert rows[0]["runs"] == 2
  mean, std = rows[0]["iou"]["a"]
  assert mean == pytest.approx(0.2) and std == pytest.approx(np.std([0.1, 0.3], ddof=1))
  assert rows[0]["iou"]["c"] == (pytest.approx(0.3), 0.0)  # NaN runs left out
  table = reports.compare_markdown(rows, ["a", "b", "c"], with_miou13=False)
  assert "| na,na | 2 | 20.0 ± 14.1 | 20.0 ± 0.0 |" in table
  assert "| +sd,joint | 1 | 50.0 | 60.0 | 70.0 | 60.0 |" in table  # one run: no spread


def test_compare_refuses_reports_of_different_protocols():
  other = _report("x", [0.1, 0.2, 0.3])
  other["resolution"] = "input"
  with pytest.raises(ValueError, match="different resolution"):
    reports.compare([_report("x", [0.1, 0.2, 0.3]), other])


def test_find_report_takes_the_highest_step_and_names_what_is_missing(tmp_path):
  for step in (3, 12):
    reports.write_report(str(tmp_path / "eval"), f"step_{step}", _report("x", [1, 1, 1], step))
  assert reports.find_report(str(tmp_path)).endswith("step_12.json")
  assert reports.find_report(str(tmp_path), 3).endswith("step_3.json")
  with pytest.raises(FileNotFoundError, match="step 7.*3, 12"):
    reports.find_report(str(tmp_path), 7)
  (tmp_path / "bad.json").write_text("{")
  with pytest.raises(ValueError, match="bad.json"):
    reports.load_report(str(tmp_path / "bad.json"))


# --------------------------------------------------------------------- the pipeline side


def test_label_resolution_preprocessing_pads_with_ignore_and_records_the_size():
  out = pipeline.preprocess_at_label_resolution(SPLIT[1], SPEC, LABEL_SHAPE)
  assert out["image"].shape == (8, 12, 3)
  assert out["label"].shape == LABEL_SHAPE and tuple(out["label_size"]) == (9, 14)
  np.testing.assert_array_equal(out["label"][:9, :14], SPLIT[1]["label"][..., 0])
  assert np.all(out["label"][9:] == 255) and np.all(out["label"][:, 14:] == 255)
  assert not out["depth_mask"][9:].any()
  with pytest.raises(ValueError, match="ex0.*re-prepare"):
    pipeline.preprocess_at_label_resolution(SPLIT[0], SPEC, (10, 17))


def test_eval_batches_mark_padding_with_index_minus_one():
  batches = list(pipeline.eval_batches(SPLIT, SPEC, per_device_batch=2, label_size=LABEL_SHAPE,
                                       local_devices=2, process_index=0, process_count=1))
  indices = np.concatenate([b["index"].ravel() for b in batches]).tolist()
  assert indices == [0, 1, 2, 3, 4, 5, 6, -1]
  assert batches[-1]["label"].shape == (2, 2) + LABEL_SHAPE


