"""One process of tests/test_multihost.py: three pmapped GIO-Ada steps on its share of a batch,
then an evaluation of the initial task net on its shard of a 7-image split.

python tests/multihost_worker.py --process_id I --num_processes N --port P --out FILE.npz
    --devices D, from the repository root with PYTHONPATH=. and
    XLA_FLAGS=--xla_force_host_platform_device_count=D JAX_PLATFORMS=cpu.

Every process builds the same global batches of 4 examples and feeds examples
[I*4/N, (I+1)*4/N) to its D devices, one per device, so N processes x D devices (N*D = 4) run
the same global step as one process with 4 devices. Each process writes its parameters before
and after the steps, and the evaluation's totals (reduced over every process), to FILE.npz
(process 0) or FILE.npz.process<I>.npz.
"""

import argparse

import jax
import numpy as np

from configs import test as test_config
from gio_ada_jax import distributed, parallel
from gio_ada_jax import models as models_lib
from gio_ada_jax import variants
from gio_ada_jax.data import pipeline
from gio_ada_jax.eval import metrics as metrics_lib
from gio_ada_jax.train import state as state_lib
from gio_ada_jax.train import step as step_lib

GLOBAL_BATCH, HEIGHT, WIDTH, STEPS = 4, 32, 48, 3


def global_batch(step: int) -> dict[str, np.ndarray]:
  """The step's 4 examples, identical in every process."""
  rng = np.random.default_rng(1000 + step)
  shape = (GLOBAL_BATCH, HEIGHT, WIDTH)
  labels = rng.integers(0, 10, shape)
  labels[:, :4] = 255  # some ignored pixels
  return {
      "source_image": rng.uniform(-1, 1, shape + (3,)).astype(np.float32),
      "source_label": labels.astype(np.int32),
      "source_depth": rng.uniform(0, 1, shape + (1,)).astype(np.float32),
      "source_depth_mask": (rng.random(shape + (1,)) > 0.2).astype(np.float32),
      "target_image": rng.uniform(-1, 1, shape + (3,)).astype(np.float32),
  }


def local_batch(batch, process_id: int, num_processes: int, local_devices: int):
  """This process's examples as [local_devices, per_device, ...], as the pipeline shapes them."""
  per_process = GLOBAL_BATCH // num_processes
  start = process_id * per_process
  return {k: v[start:start + per_process].reshape((local_devices, -1) + v.shape[1:])
          for k, v in batch.items()}


def eval_split() -> list[dict[str, np.ndarray]]:
  """7 labelled images of different sizes (a split not divisible by the devices), identical in
  every process; each process evaluates its own shard."""
  examples = []
  for index, size in enumerate([(30, 40), (32, 48), (28, 44), (32, 46), (31, 48), (29, 41),
                                (32, 47)]):
    rng = np.random.default_rng(500 + index)
    label = rng.integers(0, 10, size).astype(np.uint8)
    label[:2] = 255
    examples.append({"id": str(index), "label": label[..., None],
                     "image": rng.integers(0, 255, size + (3,)).astype(np.uint8),
                     "depth": rng.integers(100, 5000, size).astype(np.uint16)})
  return examples


def evaluate(task_net, params) -> metrics_lib.SplitResult:
  """The whole eval split over every device of every process, at label resolution."""
  split = eval_split()
  depth = metrics_lib.DepthScales(predicted_m=50.0, true_m=50.0, min_m=1e-3, max_m=0.0)
  layout = parallel.PmapLayout(tuple(jax.devices()))
  p_eval = metrics_lib.make_split_evaluator(task_net, 10, depth, layout)
  batches = pipeline.eval_batches(
      split, pipeline.Preprocessing(HEIGHT, WIDTH, depth_max_cm=5000.0), per_device_batch=1,
      label_size=(32, 48))
  result = metrics_lib.evaluate_split(p_eval, params, batches, num_examples=len(split),
                                     num_classes=10, with_depth=True, layout=layout,
                                     num_pictures=3, progress=False)
  # Pictures come from this process's own examples (its shard: every N-th image).
  shard = list(range(jax.process_index(), len(split), jax.process_count()))
  assert [p["index"] for p in result.pictures] == shard[:3], result.pictures
  assert [p["prediction"].shape for p in result.pictures] == [
      split[i]["label"].shape[:2] for i in shard[:3]]
  return result


def leaves(tree) -> dict[str, np.ndarray]:
  """Leaves by path, e.g. "['task_net']['encoder']['conv1_1']['kernel']"."""
  return {jax.tree_util.keystr(path): np.asarray(x)
          for path, x in jax.tree_util.tree_leaves_with_path(tree)}


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--process_id", type=int, required=True)
  parser.add_argument("--num_processes", type=int, required=True)
  parser.add_argument("--port", type=int, required=True)
  parser.add_argument("--devices", type=int, required=True)
  parser.add_argument("--out", required=True)
  args = parser.parse_args()

  # The test suite's settings (tests/conftest.py): full float32 matmuls, fast-compiling RNG.
  jax.config.update("jax_default_matmul_precision", "highest")
  jax.config.update("jax_threefry_partitionable", False)
  if args.num_processes > 1:
    distributed.initialize(f"127.0.0.1:{args.port}", args.num_processes, args.process_id)
  assert jax.process_count() == args.num_processes, jax.process_count()
  assert jax.local_device_count() == args.devices, jax.local_devices()
  assert jax.device_count() == GLOBAL_BATCH, jax.devices()

  config = test_config.get_config()
  # Adam divides by sqrt(v) + eps: with the default eps a near-zero gradient's update is
  # ~lr * sign(g), so the summation order of the cross-process mean could flip it. A larger
  # eps keeps updates proportional to the gradients, which is what this test compares.
  config.train.adam_eps = 1e-3
  variant = variants.from_config(config)
  models = models_lib.build_models(config.model, variant)
  state = state_lib.create_state(models, variant, config, jax.random.key(0), HEIGHT, WIDTH)
  initial = leaves(state.params)
  p_step = step_lib.make_p_train_step(models, state_lib.make_optimizers(config.train),
                                      config.train, variant)
  replicated = distributed.replicate(state)
  for step in range(STEPS):
    batch = local_batch(global_batch(step), args.process_id, args.num_processes, args.devices)
    replicated, metrics = p_step(replicated, batch)
    # pmean makes every device's metrics the global mean, in every process.
    loss = np.asarray(metrics["loss_g"])
    assert loss.shape == (args.devices,) and np.all(loss == loss[0]), loss
    print(f"process {args.process_id}: step {step + 1} loss_g={loss[0]:.6f}", flush=True)

  for x in jax.tree.leaves(replicated.params):  # the local replicas stay identical
    shards = [np.asarray(shard.data) for shard in x.addressable_shards]
    for shard in shards[1:]:
      np.testing.assert_array_equal(shards[0], shard)
  final_state = distributed.unreplicate(replicated)
  out = args.out if distributed.is_main_process() else f"{args.out}.process{args.process_id}.npz"
  final = leaves(final_state.params)
  # The initial task net is bit-identical in every run, so the evaluations must agree exactly.
  evaluated = evaluate(models.task_net, state.params["task_net"])
  np.savez(out, step=int(final_state.step), names=np.array(list(final)),
           confusion=evaluated.confusion, depth_sums=evaluated.depth_sums,
           num_images=evaluated.num_images,
           **{f"initial_{i}": x for i, x in enumerate(initial.values())},
           **{f"final_{i}": x for i, x in enumerate(final.values())})
  if args.num_processes > 1:
    jax.distributed.shutdown()  # leave together, so no process sees its peers vanish


if __name__ == "__main__":
  main()
