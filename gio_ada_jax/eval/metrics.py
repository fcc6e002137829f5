"""Evaluation of G_task on a whole split: confusion matrix and depth errors on device, metrics.

The protocol of AdaptSegNet's and ADVENT's evaluation scripts (the paper reports mIoU and says
no more about it): the
segmentation logits are upsampled to the ground truth's own resolution with bilinear
`align_corners=True`, argmax'ed, and counted into a confusion matrix (rows = ground truth,
columns = prediction) over every pixel of the split; IoU = diag / (row + col - diag) per class,
mIoU = the mean over the classes present in the ground truth or the prediction (absent ones
are NaN, as `np.nanmean` treats them). mIoU* of SYNTHIA -> Cityscapes is the mean over 13 of
the 16 classes of the same matrix.

Depth (where the target split has ground truth): the standard errors of Eigen et al. (abs rel,
sq rel, RMSE, RMSE log, delta < 1.25^k), computed in metres per image over its valid pixels and
averaged over images, as monodepth's and most depth benchmarks' scripts do.

Every device accumulates its own confusion matrix (int32) and depth sums; a psum over all
devices of all processes reduces them, and the host adds the result into int64 before int32
could overflow, so splits of any size count exactly.
"""

import dataclasses
import functools
import math
import sys
import time
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from gio_ada_jax.data.labels import LabelSpace
from gio_ada_jax.distributed import is_main_process
from gio_ada_jax.parallel import Layout

DEPTH_METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "delta_1.25", "delta_1.25^2",
                 "delta_1.25^3")
_INT32_MAX = 2**31 - 1


# ----------------------------------------------------------------------------- on device


def confusion_matrix(labels: jax.Array, predictions: jax.Array, num_classes: int,
                     weights: jax.Array | None = None) -> jax.Array:
  """[num_classes, num_classes] int32 pixel counts, rows = ground truth, columns = prediction.

  Pixels whose label is outside [0, num_classes) (255 = ignore) or whose weight is 0 are not
  counted; `weights` (0/1, broadcastable to `labels`) masks padding.
  """
  labels = labels.astype(jnp.int32)
  counted = (labels >= 0) & (labels < num_classes)
  if weights is not None:
    counted &= jnp.broadcast_to(weights, labels.shape) > 0
  cells = jnp.where(counted, labels * num_classes + predictions.astype(jnp.int32), 0)
  counts = jnp.bincount(cells.ravel(), weights=counted.ravel().astype(jnp.int32),
                        length=num_classes * num_classes)
  return counts.reshape(num_classes, num_classes)


def align_corners_rows(out_sizes: jax.Array, out_max: int, in_size: int) -> jax.Array:
  """[N, out_max, in_size] bilinear align_corners=True weights to each of `out_sizes` outputs.

  Row o < out_sizes[n] of matrix n interpolates output pixel o of an `out_sizes[n]`-long axis;
  rows beyond it are zero (padding). The sizes are traced values, so one compiled evaluation
  step serves labels of every resolution up to `out_max`.
  """
  out_sizes = out_sizes.astype(jnp.float32)[:, None]
  o = jnp.arange(out_max, dtype=jnp.float32)[None, :]
  scale = jnp.where(out_sizes > 1, (in_size - 1) / jnp.maximum(out_sizes - 1, 1), 0.0)
  src = o * scale
  lo = jnp.clip(jnp.floor(src), 0, in_size - 1)
  hi = jnp.minimum(lo + 1, in_size - 1)
  frac = (src - lo)[..., None]
  weights = (jax.nn.one_hot(lo.astype(jnp.int32), in_size) * (1 - frac)
             + jax.nn.one_hot(hi.astype(jnp.int32), in_size) * frac)
  return weights * (o < out_sizes)[..., None]


def upsample_to_label_resolution(x: jax.Array, label_sizes: jax.Array,
                                 label_shape: tuple[int, int]) -> jax.Array:
  """NHWC `x` resized to each example's label size, zero-padded to `label_shape`."""
  rows = align_corners_rows(label_sizes[:, 0], label_shape[0], x.shape[1])
  cols = align_corners_rows(label_sizes[:, 1], label_shape[1], x.shape[2])
  precision = jax.lax.Precision.HIGHEST
  x = jnp.einsum("noh,nhwc->nowc", rows, x, precision=precision)
  return jnp.einsum("npw,nowc->nopc", cols, x, precision=precision)


def depth_errors(predicted_m: jax.Array, true_m: jax.Array, mask: jax.Array,
                 min_m: float, max_m: float) -> tuple[jax.Array, jax.Array]:
  """Per image: ([N, 7] errors in the order of DEPTH_METRICS, [N] whether it had valid pixels).

  Pixels count where the mask is set and the true depth lies in [min_m, max_m] (max_m <= 0: no
  cap); predictions are clipped to the same range, as in monodepth's evaluation.
  """
  cap = max_m if max_m > 0 else jnp.inf
  valid = (mask > 0) & (true_m >= min_m) & (true_m <= cap)
  true_m = jnp.where(valid, true_m, 1.0)
  predicted_m = jnp.where(valid, jnp.clip(predicted_m, min_m, cap), 1.0)
  count = valid.sum(axis=(1, 2, 3))

  def mean(values):
    return jnp.where(valid, values, 0.0).sum(axis=(1, 2, 3)) / jnp.maximum(count, 1)

  difference = predicted_m - true_m
  ratio = jnp.maximum(predicted_m / true_m, true_m / predicted_m)
  errors = jnp.stack([
      mean(jnp.abs(difference) / true_m),
      mean(difference**2 / true_m),
      jnp.sqrt(mean(difference**2)),
      jnp.sqrt(mean((jnp.log(predicted_m) - jnp.log(true_m))**2)),
      mean((ratio < 1.25).astype(jnp.float32)),
      mean((ratio < 1.25**2).astype(jnp.float32)),
      mean((ratio < 1.25**3).astype(jnp.float32)),
  ], axis=-1)
  return errors, count > 0


@dataclasses.dataclass(frozen=True)
class DepthScales:
  """Metres per unit of the normalised depths, and the range scored (configs/default.py)."""

  predicted_m: float  # the source dataset's maximum: what the task net learned to predict
  true_m: float  # the evaluated dataset's maximum: how its ground truth was normalised
  min_m: float
  max_m: float


def eval_step(accumulators: dict[str, jax.Array], params, batch: dict[str, jax.Array], *,
              task_net, num_classes: int, depth: DepthScales | None
              ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
  """One device's batch: predictions at label resolution, counted into its accumulators.

  Returns the new accumulators and the predictions (class indices and depth in [0, 1] at label
  resolution) for pictures.
  """
  at_label_resolution = "label_size" in batch
  # AdaptSegNet's and ADVENT's protocol (the paper does not say): the stride-8 outputs are
  # upsampled once, straight to each ground truth's own resolution.
  logits, predicted_depth = task_net.apply({"params": params}, batch["image"],
                                           upsample_to_input=not at_label_resolution)
  if at_label_resolution:
    label_shape = batch["label"].shape[1:3]
    logits = upsample_to_label_resolution(logits, batch["label_size"], label_shape)
    predicted_depth = upsample_to_label_resolution(predicted_depth, batch["label_size"],
                                                   label_shape)
  predictions = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  valid = batch["valid"][:, None, None]
  new = dict(accumulators)
  new["confusion"] = accumulators["confusion"] + confusion_matrix(
      batch["label"], predictions, num_classes, valid)
  new["num_images"] = accumulators["num_images"] + batch["valid"].sum().astype(jnp.int32)
  if depth is not None:
    errors, has_pixels = depth_errors(predicted_depth * depth.predicted_m,
                                      batch["depth"] * depth.true_m, batch["depth_mask"],
                                      depth.min_m, depth.max_m)
    counted = has_pixels & (batch["valid"] > 0)
    new["depth_sums"] = accumulators["depth_sums"] + jnp.where(counted[:, None], errors,
                                                               0.0).sum(axis=0)
    new["depth_images"] = accumulators["depth_images"] + counted.sum().astype(jnp.int32)
  return new, {"prediction": predictions, "depth": jnp.clip(predicted_depth, 0.0, 1.0)}


def zero_accumulators(num_classes: int, with_depth: bool) -> dict[str, jax.Array]:
  """Empty per-device accumulators of `eval_step`."""
  zeros = {"confusion": jnp.zeros((num_classes, num_classes), jnp.int32),
           "num_images": jnp.zeros((), jnp.int32)}
  if with_depth:
    zeros["depth_sums"] = jnp.zeros((len(DEPTH_METRICS),), jnp.float32)
    zeros["depth_images"] = jnp.zeros((), jnp.int32)
  return zeros


# ---------------------------------------------------------------------------------- host


def segmentation_metrics(confusion: np.ndarray, label_space: LabelSpace) -> dict[str, Any]:
  """Per-class IoU, mIoU (and mIoU* where the label space has one), pixel and mean accuracy.

  Classes absent from both ground truth and prediction have IoU NaN (None in the result's
  `iou`) and are left out of the means.
  """
  confusion = np.asarray(confusion, np.int64)
  if confusion.shape != (label_space.num_classes,) * 2:
    raise ValueError(f"a {confusion.shape} confusion matrix does not fit the "
                     f"{label_space.num_classes} classes of {label_space.name}.")
  diag = np.diag(confusion).astype(np.float64)
  rows, cols = confusion.sum(axis=1), confusion.sum(axis=0)
  with np.errstate(invalid="ignore", divide="ignore"):
    iou = diag / (rows + cols - diag)
    class_accuracy = diag / rows
  metrics = {
      "iou": dict(zip(label_space.class_names, iou.tolist())),
      "miou": _nanmean(iou),
      "pixel_accuracy": float(diag.sum() / confusion.sum()) if confusion.sum() else math.nan,
      "mean_accuracy": _nanmean(class_accuracy),
  }
  if label_space.starred_classes:  # SYNTHIA -> Cityscapes: mIoU* of Table 4
    metrics["miou13"] = _nanmean(iou[list(label_space.starred_classes)])
  return metrics


def _nanmean(values: np.ndarray) -> float:
  values = np.asarray(values, np.float64)
  return float(np.nanmean(values)) if np.isfinite(values).any() else math.nan


def depth_metrics(sums: np.ndarray, num_images: int) -> dict[str, float]:
  """Mean over images of each DEPTH_METRICS error from their sums."""
  if num_images == 0:
    return {name: math.nan for name in DEPTH_METRICS}
  return {name: float(s) / num_images for name, s in zip(DEPTH_METRICS, np.asarray(sums))}


@dataclasses.dataclass
class SplitResult:
  """What one pass over a split counted, reduced over every device and process."""

  confusion: np.ndarray  # int64 [C, C]
  num_images: int
  depth_sums: np.ndarray | None  # float64 [7], or None without ground-truth depth
  depth_images: int
  pictures: list[dict[str, np.ndarray]]  # the first examples of this process, for pictures
  seconds: float


def flush_interval(pixels_per_step: int) -> int:
  """Steps after which the int32 device counts must move to the host's int64 totals."""
  return max(1, _INT32_MAX // max(pixels_per_step, 1))


class _Progress:
  """Progress with images/s on process 0 (stderr): a bar redrawn in place on a terminal, a
  line per tenth of the split otherwise (logs)."""

  def __init__(self, total: int, enabled: bool):
    self.total, self.start = total, time.time()
    self.enabled = enabled and is_main_process()
    self.interactive = sys.stderr.isatty()
    self.last_draw, self.last_tenth = 0.0, 0

  def update(self, done: int) -> None:
    if not self.enabled:
      return
    now = time.time()
    tenth = 10 * done // max(self.total, 1)
    finished = done >= self.total
    if self.interactive and (now - self.last_draw < 0.2 and not finished):
      return
    if not self.interactive and tenth == self.last_tenth and not finished:
      return
    self.last_draw, self.last_tenth = now, tenth
    filled = 30 * done // max(self.total, 1)
    line = (f"  evaluating [{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total} images, "
            f"{done / max(now - self.start, 1e-9):.1f} images/s")
    sys.stderr.write(("\r" + line) if self.interactive else (line + "\n"))
    sys.stderr.flush()

  def close(self) -> None:
    if self.enabled and self.interactive:
      sys.stderr.write("\n")


def make_split_evaluator(task_net, num_classes: int, depth: DepthScales | None,
                         layout: Layout) -> Callable:
  """`eval_step` compiled for `layout` (parallel.py; compiled once, reused for every
  checkpoint). A pmap layout's devices span every process: its collectives run over exactly
  the devices it is given, so one process's devices alone would count that process alone."""
  step = functools.partial(eval_step, task_net=task_net, num_classes=num_classes, depth=depth)
  return layout.compile_step(lambda accumulators, params, batch, axis_name: step(
      accumulators, params, batch), sharded_outputs=True)


def evaluate_split(p_eval_step: Callable, params, batches: Iterator[dict[str, np.ndarray]], *,
                   num_examples: int, num_classes: int, with_depth: bool, layout: Layout,
                   num_pictures: int = 0, progress: bool = True) -> SplitResult:
  """Run `p_eval_step` (make_split_evaluator's, for `layout`) over every batch of a split; the
  totals over all processes.

  `batches` come from `pipeline.eval_batches` laid out for this process's part of the layout
  (`layout.local_rows` slots); `params` are the task net's (unreplicated). Up to
  `num_pictures` examples of this process keep their inputs and predictions for pictures.
  """
  start = time.time()
  placed = layout.place_state(params)
  zeros = lambda: layout.place_state(zero_accumulators(num_classes, with_depth))  # noqa: E731
  accumulators = zeros()
  totals = {"confusion": np.zeros((num_classes, num_classes), np.int64), "num_images": 0,
            "depth_sums": np.zeros(len(DEPTH_METRICS)), "depth_images": 0}
  pictures: list[dict[str, np.ndarray]] = []
  bar = _Progress(num_examples, progress)
  flush_every, since_flush = None, 0

  def flush(accumulators):
    reduced = layout.sum_to_host(accumulators)
    for key, value in reduced.items():
      totals[key] = totals[key] + np.asarray(value).astype(np.asarray(totals[key]).dtype)
    return zeros()

  done = 0
  for batch in batches:
    if flush_every is None:
      # Labelled pixels per step over every batch slot of every process.
      pixels = math.prod(batch["label"].shape) // layout.local_rows * layout.rows
      flush_every = flush_interval(pixels)
    inputs = layout.place_batch({k: v for k, v in batch.items() if k != "index"})
    accumulators, outputs = p_eval_step(accumulators, placed, inputs)
    since_flush += 1
    if since_flush == flush_every:
      accumulators, since_flush = flush(accumulators), 0
    if len(pictures) < num_pictures:
      pictures += _picture_inputs(batch, outputs, num_pictures - len(pictures), layout)
    done += int(batch["valid"].sum()) * jax.process_count()
    bar.update(min(done, num_examples))
  flush(accumulators)
  bar.close()
  return SplitResult(confusion=totals["confusion"], num_images=int(totals["num_images"]),
                     depth_sums=totals["depth_sums"] if with_depth else None,
                     depth_images=int(totals["depth_images"]), pictures=pictures,
                     seconds=time.time() - start)


def _picture_inputs(batch: dict[str, np.ndarray], outputs: dict[str, jax.Array],
                    limit: int, layout: Layout) -> list[dict[str, np.ndarray]]:
  """Host copies of the valid examples of a batch with their predictions, cropped to size."""
  flat = lambda x: np.asarray(x).reshape((-1,) + np.shape(x)[2:])  # noqa: E731
  host = {k: flat(v) for k, v in batch.items()}
  predicted = {k: flat(layout.local_rows_of(v)) for k, v in outputs.items()}
  examples = []
  for slot in np.flatnonzero(host["valid"] > 0)[:limit]:
    height, width = (host["label_size"][slot] if "label_size" in host
                     else host["label"].shape[1:3])
    crop = (slice(0, height), slice(0, width))
    examples.append({
        "index": int(host["index"][slot]), "image": host["image"][slot],
        "label": host["label"][slot][crop], "prediction": predicted["prediction"][slot][crop],
        "depth": host["depth"][slot][crop][..., 0],
        "depth_mask": host["depth_mask"][slot][crop][..., 0],
        "predicted_depth": predicted["depth"][slot][crop][..., 0]})
  return examples


def summarise(result: SplitResult, label_space: LabelSpace) -> dict[str, Any]:
  """The metrics of a SplitResult: segmentation always, depth where ground truth exists."""
  metrics = segmentation_metrics(result.confusion, label_space)
  metrics["num_images"] = result.num_images
  if result.depth_sums is not None:
    metrics["depth"] = depth_metrics(result.depth_sums, result.depth_images)
    metrics["depth"]["num_images"] = result.depth_images
  return metrics

