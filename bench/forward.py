"""Forward-pass time of each GIO-Ada network (Flax), at a given size and dtype.

    python -m bench.forward --height 512 --width 1024 --dtype bfloat16 [--config.model.width=..]

Prints, per network: median and spread of ms per forward over --iters timed runs after
warm-up, images/s, XLA's FLOP count, achieved TFLOP/s, and the process's peak device memory
where the backend reports it. Forward only; the full training step is benchmarked separately.
"""

import sys
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from gio_ada_jax import models, variants

_CONFIG = config_flags.DEFINE_config_file("config", "configs/default.py", "Model config.")
_HEIGHT = flags.DEFINE_integer("height", 512, "Input height.")
_WIDTH = flags.DEFINE_integer("width", 1024, "Input width.")
_BATCH = flags.DEFINE_integer("batch", 1, "Images per forward.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
_ITERS = flags.DEFINE_integer("iters", 20, "Timed forwards per network.")


def _inputs(name, model_config, batch, height, width):
  key = jax.random.key(0)
  images = jax.random.uniform(key, (batch, height, width, 3), minval=-1, maxval=1)
  if name == "generator":
    labels = jax.random.randint(key, (batch, height, width), 0, model_config.num_classes)
    return images, labels, jax.random.uniform(key, (batch, height, width, 1))
  if name == "d_out":
    return (jax.random.uniform(key, (batch, height, width, model_config.num_classes + 1)),)
  return (images,)


def _time(fn, args, iters):
  jax.block_until_ready(fn(*args))  # compile and warm up
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(iters):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return np.asarray(times) * 1e3


def main(argv):
  del argv
  model_config = _CONFIG.value.model
  model_config.dtype = _DTYPE.value
  built = models.build_models(model_config, variants.from_config(_CONFIG.value))
  device = jax.devices()[0]
  print(f"device: {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}, "
        f"{_BATCH.value}x{_HEIGHT.value}x{_WIDTH.value}, {_DTYPE.value}, "
        f"width x{model_config.width}")
  print(f"{'network':<10} {'ms median':>10} {'ms p10-p90':>16} {'img/s':>8} {'GFLOP':>9} "
        f"{'TFLOP/s':>8} {'peak GiB*':>9}")
  for name in ("generator", "task_net", "d_img", "d_out"):
    module = getattr(built, name)
    args = _inputs(name, model_config, _BATCH.value, _HEIGHT.value, _WIDTH.value)
    variables = jax.jit(module.init)(jax.random.key(0), *args)
    forward = jax.jit(module.apply)
    # FLOPs of the HLO before backend compilation: after it, XLA:GPU hands convolutions to
    # cuDNN custom calls that its cost analysis does not count.
    flops = (forward.lower(variables, *args).cost_analysis() or {}).get("flops", float("nan"))
    ms = _time(forward, (variables,) + args, _ITERS.value)
    median = float(np.median(ms))
    stats = device.memory_stats() or {}
    peak = stats.get("peak_bytes_in_use", float("nan")) / 2**30
    print(f"{name:<10} {median:>10.2f} {np.percentile(ms, 10):>7.2f}-{np.percentile(ms, 90):<8.2f}"
          f" {_BATCH.value / median * 1e3:>8.1f} {flops / 1e9:>9.1f} "
          f"{flops / median / 1e9:>8.1f} {peak:>9.2f}")
    del variables
  print("* peak device memory of the process so far (it includes the conv autotuner's scratch).")


if __name__ == "__main__":
  sys.exit(app.run(main))
