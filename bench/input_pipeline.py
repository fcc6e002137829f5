"""Training input pipeline throughput: images/s of the prepared-data pipeline, by thread count.

    python -m bench.input_pipeline --benchmark kitti [--threads 1,2] [--batches 30]
        [--data_dir DIR --source vkitti --target kitti_semantics]

Times `pipeline.train_iterator`'s work (read the prepared ArrayRecord examples, decode,
resize, flip, normalise, batch; source with labels and depth, target with images) for each
domain pair batch, as the trainer draws it. Without --data_dir it renders a small procedural
benchmark at the datasets' stored image size into a temporary folder (the prepared format and the
decoding are the same as for the real datasets; the procedural images are PNGs as in Virtual
KITTI and KITTI). Prints images/s per thread count (each domain gets that many threads). The
cores are those the process may use (printed first): per-core figures come from a run pinned
to one core, `taskset -c 0 python -m bench.input_pipeline ...`.
"""

import os
import sys
import tempfile
import time

import numpy as np
from absl import app, flags, logging

from configs import cpu as cpu_config
from gio_ada_jax.data import pipeline

# Training input size (network input) and the stored image size of each benchmark config.
BENCHMARKS = {
    "kitti": {"input": (375, 1242), "stored": (375, 1242)},  # Virtual KITTI -> KITTI
    "cityscapes": {"input": (512, 1024), "stored": (760, 1280)},  # SYNTHIA-RAND-CITYSCAPES
}
_BENCHMARK = flags.DEFINE_enum("benchmark", "kitti", list(BENCHMARKS), "Image sizes.")
_THREADS = flags.DEFINE_list("threads", ["1", "2"], "Read threads per domain to try.")
_BATCH = flags.DEFINE_integer("batch", 1, "Images per domain per device per step.")
_DEVICES = flags.DEFINE_integer("devices", 1, "Devices per process the batches are shaped for.")
_BATCHES = flags.DEFINE_integer("batches", 30, "Timed batches per thread count.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 48, "Procedural images per domain to render.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Prepared datasets (default: render).")
_SOURCE = flags.DEFINE_string("source", "procedural/source", "Source dataset in --data_dir.")
_TARGET = flags.DEFINE_string("target", "procedural/target", "Target dataset in --data_dir.")


def render_procedural(data_dir: str, stored_size: tuple[int, int], num_images: int):
  """A small procedural benchmark at `stored_size` in `data_dir`; the config that reads it."""
  from gio_ada_jax.data import prepare  # pylint: disable=g-import-not-at-top  (TensorFlow)
  config = cpu_config.get_config(None)
  procedural = config.data.procedural
  procedural.height, procedural.width = stored_size
  procedural.num_train, procedural.num_validation = num_images, 1
  prepare.prepare("procedural", data_dir, config)
  return config


def images_per_s(iterator, batches: int, images_per_batch: int) -> float:
  """Rate of `batches` draws after two untimed ones (thread start-up)."""
  for _ in range(2):
    next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * images_per_batch / (time.perf_counter() - start)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  sizes = BENCHMARKS[_BENCHMARK.value]
  with tempfile.TemporaryDirectory() as scratch:
    if _DATA_DIR.value:
      config = cpu_config.get_config(None)
      config.data.data_dir = _DATA_DIR.value
      config.data.source, config.data.target = _SOURCE.value, _TARGET.value
    else:
      print(f"rendering {_NUM_IMAGES.value} procedural images per domain at "
            f"{sizes['stored'][0]}x{sizes['stored'][1]} ...", flush=True)
      config = render_procedural(scratch, sizes["stored"], _NUM_IMAGES.value)
      config.data.data_dir = scratch
    config.data.height, config.data.width = sizes["input"]
    config.data.global_batch = _BATCH.value * _DEVICES.value
    images_per_batch = 2 * _BATCH.value * _DEVICES.value  # source + target
    print(f"{len(os.sched_getaffinity(0))} cores usable, {_BENCHMARK.value}: input "
          f"{sizes['input'][0]}x{sizes['input'][1]}, {config.data.source} + "
          f"{config.data.target}, {images_per_batch} images per draw", flush=True)
    print(f"{'threads':>8} {'images/s':>9}")
    for threads in (int(t) for t in _THREADS.value):
      config.data.read_threads = threads
      config.data.read_buffer_batches = max(2 * threads, 4)
      rates = []
      for _ in range(2):  # two fresh iterators: the spread shows the noise
        iterator = pipeline.train_iterator(config, local_devices=_DEVICES.value)
        rates.append(images_per_s(iterator, _BATCHES.value, images_per_batch))
      rate = float(np.median(rates))
      print(f"{threads:>8} {rate:>9.1f}   (runs: "
            f"{', '.join(f'{r:.1f}' for r in rates)})", flush=True)


if __name__ == "__main__":
  sys.exit(app.run(main))
