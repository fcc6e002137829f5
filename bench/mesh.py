"""The mesh mode (train.parallelism = "mesh", gio_ada_jax/parallel.py) measured.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \\
        python -m bench.mesh memory [--height 1024 --width 2048 --spatial 1,2,4,8]
        [--dtypes float32,bfloat16] [--config configs/default.py]

  Compiles (nothing runs) one full GIO-Ada training step, global batch 1 + 1, over a
  (data 1, spatial S) mesh for each S, and prints XLA's per-device memory of it: temporaries
  (activations kept for the backward pass and scratch), arguments and outputs. XLA plans the
  buffers before any device runs, so simulated CPU devices give the same plan a GPU's
  compilation would only where the backends fuse alike: read it as the trend over S.

    XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu \\
        python -m bench.mesh time [--config configs/demo.py --height 64 --width 192 --batch 4]
        [--shapes 4x1,2x2,1x4] [--iters 10]

  Times the trainer's step under pmap and under each mesh shape on the simulated devices (the
  same state and batch), alternating step by step after warm-up; prints median ms and the
  mesh / pmap ratio.
"""

import sys
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from gio_ada_jax import models, parallel, variants
from gio_ada_jax.train import state as state_lib
from gio_ada_jax.train import step as train_step

_CONFIG = config_flags.DEFINE_config_file("config", "configs/default.py",
                                          "Config (variant with :INPUT,OUTPUT).")
_HEIGHT = flags.DEFINE_integer("height", 1024, "Training crop height.")
_WIDTH = flags.DEFINE_integer("width", 2048, "Training crop width.")
_BATCH = flags.DEFINE_integer("batch", 1, "Global batch: source images (and as many target).")
_SPATIAL = flags.DEFINE_list("spatial", ["1", "2", "4", "8"], "memory: spatial axis sizes.")
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "memory: model.dtype values.")
_SHAPES = flags.DEFINE_list("shapes", ["4x1", "2x2", "1x4"], "time: DATAxSPATIAL meshes.")
_ITERS = flags.DEFINE_integer("iters", 10, "time: timed steps per layout.")
_CLASSES = flags.DEFINE_integer("num_classes", 19, "Classes (Cityscapes: 19).")


def _setup(dtype: str | None = None):
  config = _CONFIG.value
  config.model.num_classes = _CLASSES.value
  config.model.task_net.encoder_init = "random"
  if dtype is not None:
    config.model.dtype = dtype
  variant = variants.from_config(config)
  built = models.build_models(config.model, variant)
  make = lambda: state_lib.create_state(built, variant, config, jax.random.key(0),  # noqa: E731
                                        _HEIGHT.value, _WIDTH.value)
  p_step = lambda layout: train_step.make_p_train_step(  # noqa: E731
      built, state_lib.make_optimizers(config.train), config.train, variant, layout)
  return make, p_step


def _batch_shapes(batch: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  image = (batch, _HEIGHT.value, _WIDTH.value)
  return {"source_image": (image + (3,), np.float32), "source_label": (image, np.int32),
          "source_depth": (image + (1,), np.float32),
          "source_depth_mask": (image + (1,), np.float32),
          "target_image": (image + (3,), np.float32)}


def memory() -> None:
  print(f"jax {jax.__version__} ({jax.default_backend()}, {jax.device_count()} devices), "
        f"{_HEIGHT.value}x{_WIDTH.value}, global batch {_BATCH.value} + {_BATCH.value}, "
        f"{_CLASSES.value} classes, model.width {_CONFIG.value.model.width}")
  print("| dtype | spatial | rows per device | temporaries GiB | arguments GiB | outputs GiB "
        "| compile s |")
  print("|---|---|---|---|---|---|---|")
  for dtype in _DTYPES.value:
    make, p_step = _setup(dtype)
    abstract_state = jax.eval_shape(make)
    for spatial in (int(s) for s in _SPATIAL.value):
      layout = parallel.MeshLayout(parallel.make_mesh(1, spatial, jax.devices()[:spatial]))
      state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,  # noqa: B023
                                                          sharding=layout.replicated),
                           abstract_state)
      batch = {k: jax.ShapeDtypeStruct(shape, dtype_, sharding=layout.batch_sharding(shape))
               for k, (shape, dtype_) in _batch_shapes(_BATCH.value).items()}
      start = time.perf_counter()
      analysis = p_step(layout).lower(state, batch).compile().memory_analysis()
      seconds = time.perf_counter() - start
      gib = lambda n: f"{n / 2**30:.2f}"  # noqa: E731
      print(f"| {dtype} | {spatial} | {_HEIGHT.value // spatial} | "
            f"{gib(analysis.temp_size_in_bytes)} | {gib(analysis.argument_size_in_bytes)} | "
            f"{gib(analysis.output_size_in_bytes)} | {seconds:.0f} |", flush=True)


def timing() -> None:
  make, p_step = _setup()
  state = make()
  rng = np.random.default_rng(0)
  host = {k: (rng.uniform(-1, 1, shape) if dtype == np.float32 else
              rng.integers(0, _CLASSES.value, shape)).astype(dtype)
          for k, (shape, dtype) in _batch_shapes(_BATCH.value).items()}
  layouts = {"pmap": parallel.PmapLayout()}
  for shape in _SHAPES.value:
    data, spatial = (int(n) for n in shape.split("x"))
    layouts[f"mesh {shape}"] = parallel.MeshLayout(parallel.make_mesh(data, spatial))
  runs = {}
  for name, layout in layouts.items():
    local = {k: v.reshape((layout.local_rows, -1) + v.shape[1:]) for k, v in host.items()}
    runs[name] = [p_step(layout), layout.place_state(state), layout.place_batch(local), []]
  for i in range(_ITERS.value + 2):  # 2 warm-up steps, then alternate
    for name, run in runs.items():
      start = time.perf_counter()
      run[1], metrics = run[0](run[1], run[2])
      jax.block_until_ready(metrics)
      if i >= 2:
        run[3].append(time.perf_counter() - start)
  print(f"jax {jax.__version__} ({jax.default_backend()}, {jax.device_count()} devices), "
        f"{_HEIGHT.value}x{_WIDTH.value}, global batch {_BATCH.value} + {_BATCH.value}, "
        f"{_ITERS.value} steps each")
  pmap_ms = float(np.median(runs["pmap"][3])) * 1e3
  for name, run in runs.items():
    ms = np.asarray(run[3]) * 1e3
    print(f"{name:<10} {np.median(ms):8.1f} ms/step (p10 {np.percentile(ms, 10):.1f}, p90 "
          f"{np.percentile(ms, 90):.1f})  / pmap {np.median(ms) / pmap_ms:.2f}")


def main(argv):
  what = argv[1] if len(argv) > 1 else "memory"
  if what == "memory":
    memory()
  elif what == "time":
    timing()
  else:
    raise app.UsageError(f"unknown measurement {what!r}: memory or time")


if __name__ == "__main__":
  sys.exit(app.run(main))
