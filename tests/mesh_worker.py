"""Three GIO-Ada steps under pmap, under jit over (data, spatial) meshes and on one device, for
tests/test_mesh.py: imported there (the 4 devices of `make test`), or run as a process of its
own (8 devices; 2 processes x 2 devices).

python tests/mesh_worker.py --shapes 8x1,4x2,2x4,1x8 --out FILE.npz
    [--process_id I --num_processes N --port P], from the repository root with PYTHONPATH=.
    and XLA_FLAGS=--xla_force_host_platform_device_count=D JAX_PLATFORMS=cpu.

Every process builds the same global batches of one example per device (each with its own
numbers of labelled and depth-valid pixels) and feeds its own consecutive examples. Process 0
writes, per run ("single", "pmap" when one process, "mesh DxS"), the final parameters and Adam
moments and every step's losses to FILE.npz.
"""

import argparse
import functools

import jax
import numpy as np

from configs import test as test_config
from gio_ada_jax import distributed, parallel
from gio_ada_jax import models as models_lib
from gio_ada_jax import variants
from gio_ada_jax.train import state as state_lib
from gio_ada_jax.train import step as step_lib

HEIGHT, WIDTH, STEPS = 32, 48, 3


def config():
  """The test config; a larger Adam epsilon (as tests/multihost_worker.py explains): with the
  default one a near-zero gradient's update is ~lr * sign(g), which another summation order
  (the mesh's all-reduces) can flip, and that is not what these tests compare."""
  config = test_config.get_config()
  config.train.adam_eps = 1e-3
  return config


def global_batches(num_examples: int) -> list[dict[str, np.ndarray]]:
  """STEPS global batches; example k hides k/num_examples of its labels and depth."""
  batches = []
  for step in range(STEPS):
    rng = np.random.default_rng(2000 + step)
    shape = (num_examples, HEIGHT, WIDTH)
    labels = rng.integers(0, 10, shape)
    mask = np.ones(shape + (1,), np.float32)
    for k in range(num_examples):
      labels[k, :HEIGHT * k // (2 * num_examples)] = 255
      mask[k, HEIGHT - HEIGHT * k // (2 * num_examples):] = 0.0
    batches.append({
        "source_image": rng.uniform(-1, 1, shape + (3,)).astype(np.float32),
        "source_label": labels.astype(np.int32),
        "source_depth": rng.uniform(0, 1, shape + (1,)).astype(np.float32),
        "source_depth_mask": mask,
        "target_image": rng.uniform(-1, 1, shape + (3,)).astype(np.float32)})
  return batches


def setup():
  """(models, optimizers, the objective's config, variant, initial state) of config()."""
  cfg = config()
  variant = variants.from_config(cfg)
  models = models_lib.build_models(cfg.model, variant)
  state = state_lib.create_state(models, variant, cfg, jax.random.key(0), HEIGHT, WIDTH)
  return models, state_lib.make_optimizers(cfg.train), cfg.train, variant, state


def _result(state, losses) -> dict[str, np.ndarray]:
  """Parameters and Adam moments by path, and the losses [step, name]."""
  leaves = {jax.tree_util.keystr(path): np.asarray(x) for path, x in
            jax.tree_util.tree_leaves_with_path((state.params, state.opt_states))}
  return {**leaves, "losses": np.asarray(losses)}


LOSSES = ("loss_g", "loss_seg", "loss_depth", "loss_g_input_adv", "loss_g_output_adv",
          "loss_d_img", "loss_d_out")


def run_single(setup_, batches) -> dict[str, np.ndarray]:
  """STEPS steps on this process's first device over the whole global batches."""
  models, optimizers, train_config, variant, state = setup_
  step = jax.jit(functools.partial(
      step_lib.train_step, models=models, optimizers=optimizers,
      objective=step_lib.objective_from_config(train_config, variant), axis_name=None))
  state = jax.device_put(state, jax.local_devices()[0])
  losses = []
  for batch in batches:
    state, metrics = step(state, batch)
    losses.append([float(metrics[name]) for name in LOSSES])
  return _result(state, losses)


def local_part(batch, layout: parallel.Layout) -> dict[str, np.ndarray]:
  """This process's consecutive examples, [local_rows, per_row, ...] as the pipeline gives."""
  per_process = len(batch["source_image"]) // jax.process_count()
  start = jax.process_index() * per_process
  return {k: v[start:start + per_process].reshape((layout.local_rows, -1) + v.shape[1:])
          for k, v in batch.items()}


def run_layout(setup_, batches, layout: parallel.Layout) -> dict[str, np.ndarray]:
  """STEPS steps compiled for `layout`, each process feeding its part of the global batches."""
  models, optimizers, train_config, variant, state = setup_
  p_step = step_lib.make_p_train_step(models, optimizers, train_config, variant, layout)
  placed = layout.place_state(state)
  losses = []
  for batch in batches:
    placed, metrics = p_step(placed, layout.place_batch(local_part(batch, layout)))
    host = layout.to_host(metrics)
    losses.append([float(host[name]) for name in LOSSES])
  return _result(layout.host_state(placed), losses)


def mesh(shape: str) -> parallel.MeshLayout:
  """The layout of a "DxS" mesh over every device."""
  data, spatial = (int(n) for n in shape.split("x"))
  return parallel.MeshLayout(parallel.make_mesh(data, spatial))


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--shapes", required=True)
  parser.add_argument("--out", required=True)
  parser.add_argument("--process_id", type=int, default=0)
  parser.add_argument("--num_processes", type=int, default=1)
  parser.add_argument("--port", type=int, default=0)
  args = parser.parse_args()
  # The test suite's settings (tests/conftest.py): full float32 matmuls, fast-compiling RNG.
  jax.config.update("jax_default_matmul_precision", "highest")
  jax.config.update("jax_threefry_partitionable", False)
  if args.num_processes > 1:
    distributed.initialize(f"127.0.0.1:{args.port}", args.num_processes, args.process_id)
  assert jax.process_count() == args.num_processes
  setup_ = setup()
  batches = global_batches(jax.device_count())
  # Only process 0 writes the results, so only it runs the one-device reference.
  results = {"single": run_single(setup_, batches)} if distributed.is_main_process() else {}
  if args.num_processes == 1:
    results["pmap"] = run_layout(setup_, batches, parallel.PmapLayout())
  for shape in args.shapes.split(","):
    results[f"mesh {shape}"] = run_layout(setup_, batches, mesh(shape))
  if distributed.is_main_process():
    np.savez(args.out, **{f"{run}|{name}": value for run, result in results.items()
                          for name, value in result.items()})
  if args.num_processes > 1:
    jax.distributed.shutdown()  # leave together, so no process sees its peers vanish


if __name__ == "__main__":
  main()
