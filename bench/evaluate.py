"""Evaluation throughput: images/s of the pmapped evaluation step on synthetic device batches.

    python -m bench.evaluate --benchmark cityscapes --dtype bfloat16 [--batch 2] [--check]

One step = the task net's forward at the input size, bilinear upsampling of the logits (and
depth) to the label resolution, argmax, and the confusion-matrix (and depth-error) counting,
on every local device. Input data come from the host once, so this measures the device side;
bench/input_pipeline.py measures the pipeline. With --check, the step's confusion matrix is
compared with numpy's count of the predictions it returned (exactness on this backend).
Also prints the network forward alone, so the cost of scoring at label resolution shows.
"""

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from gio_ada_jax import models, parallel, variants
from gio_ada_jax.distributed import put_sharded, replicate
from gio_ada_jax.eval import metrics

# The evaluation settings of the benchmark configs: (input size, label size, classes).
BENCHMARKS = {
    "cityscapes": ((512, 1024), (1024, 2048), 16),  # SYNTHIA -> Cityscapes, half-res input
    "kitti": ((375, 1242), (375, 1242), 10),  # Virtual KITTI -> KITTI
}
_CONFIG = config_flags.DEFINE_config_file("config", "configs/default.py", "Model config.")
_BENCHMARK = flags.DEFINE_enum("benchmark", "cityscapes", list(BENCHMARKS), "Sizes and classes.")
_BATCH = flags.DEFINE_integer("batch", 1, "Images per device per step.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
_ITERS = flags.DEFINE_integer("iters", 10, "Timed steps.")
_DEPTH = flags.DEFINE_bool("depth", False, "Also score depth (where ground truth exists).")
_CHECK = flags.DEFINE_bool("check", False, "Check the device counts against numpy.")


def _batch(devices: int, per_device: int, input_size, label_size, num_classes, with_depth):
  rng = np.random.default_rng(0)
  shape = (devices, per_device)
  batch = {"image": rng.uniform(-1, 1, shape + input_size + (3,)).astype(np.float32),
           "label": rng.integers(0, num_classes, shape + label_size).astype(np.int32),
           "label_size": np.broadcast_to(np.asarray(label_size, np.int32), shape + (2,)).copy(),
           "valid": np.ones(shape, np.float32)}
  batch["label"][..., :8, :] = 255
  if with_depth:
    batch["depth"] = rng.uniform(0.01, 1, shape + label_size + (1,)).astype(np.float32)
    batch["depth_mask"] = np.ones(shape + label_size + (1,), np.float32)
  return batch


def _median_ms(fn, iters: int) -> tuple[float, float, float]:
  jax.block_until_ready(fn())  # compile
  jax.block_until_ready(fn())
  times = []
  for _ in range(iters):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  times = np.asarray(times) * 1e3
  return float(np.median(times)), float(np.percentile(times, 10)), float(np.percentile(times, 90))


def _peak_gib() -> str:
  stats = jax.local_devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  return f"{peak / 2**30:.2f}" if peak else "n/a"


def main(argv):
  del argv
  model_config = _CONFIG.value.model
  input_size, label_size, num_classes = BENCHMARKS[_BENCHMARK.value]
  model_config.num_classes, model_config.dtype = num_classes, _DTYPE.value
  task_net = models.build_models(model_config, variants.from_config(_CONFIG.value)).task_net
  devices = jax.local_devices()  # one process
  params = jax.jit(task_net.init)(jax.random.key(0), jnp.zeros((1,) + input_size + (3,)))
  params = params["params"]
  depth = (metrics.DepthScales(predicted_m=80.0, true_m=80.0, min_m=1e-3, max_m=0.0)
           if _DEPTH.value else None)
  batch = _batch(len(devices), _BATCH.value, input_size, label_size, num_classes, depth)
  device_batch = put_sharded(batch, devices)
  p_eval = metrics.make_split_evaluator(task_net, num_classes, depth,
                                       parallel.PmapLayout(tuple(devices)))
  replicated = replicate(params, devices)
  zeros = metrics.zero_accumulators(num_classes, depth is not None)
  state = {"accumulators": replicate(zeros, devices)}

  def step():
    state["accumulators"], outputs = p_eval(state["accumulators"], replicated, device_batch)
    return outputs["prediction"]

  forward = jax.pmap(functools.partial(lambda p, x: task_net.apply({"params": p}, x)),
                     devices=devices)
  images = device_batch["image"]
  images_per_step = len(devices) * _BATCH.value
  device = devices[0]
  print(f"device: {device.device_kind} x{len(devices)} ({jax.default_backend()}), jax "
        f"{jax.__version__}, {_BENCHMARK.value}: input {input_size}, labels {label_size}, "
        f"{num_classes} classes, {_BATCH.value}/device, {_DTYPE.value}, depth {_DEPTH.value}")
  for name, fn in (("evaluation step", step), ("forward only", lambda: forward(replicated,
                                                                               images))):
    median, p10, p90 = _median_ms(fn, _ITERS.value)
    print(f"{name:<16} {median:9.1f} ms/step (p10 {p10:.1f}, p90 {p90:.1f})  "
          f"{images_per_step / median * 1e3:8.1f} images/s")
  print(f"peak device memory (process, GiB): {_peak_gib()}")
  if _CHECK.value:
    state["accumulators"] = replicate(zeros, devices)
    predictions = np.asarray(step())
    counted = np.asarray(jax.device_get(state["accumulators"]["confusion"])).sum(0)
    labels, k = batch["label"].ravel(), batch["label"].ravel() < num_classes
    want = np.bincount(num_classes * labels[k] + predictions.ravel()[k],
                       minlength=num_classes**2).reshape(num_classes, num_classes)
    print(f"check: device confusion matrix == numpy count: {np.array_equal(counted, want)} "
          f"({int(want.sum())} pixels)")
    if not np.array_equal(counted, want):
      raise SystemExit(1)


if __name__ == "__main__":
  app.run(main)
