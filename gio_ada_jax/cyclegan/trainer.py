"""train_cyclegan(config, workdir): the CycleGAN baseline's training (the 'cg' variant's first
stage) in the shared training loop (train/loop.py)."""

from typing import Sequence

import jax
import numpy as np

from gio_ada_jax import images
from gio_ada_jax.cyclegan import model as cyclegan
from gio_ada_jax.data import pipeline
from gio_ada_jax.train import run_config
from gio_ada_jax.train.loop import Loop, run_loop


def train_cyclegan(config, workdir: str, allow_config_change: Sequence[str] = ()
                   ) -> cyclegan.CycleGanState:
  """Train the 'cg' CycleGAN (config.cyclegan) on the source and target training images,
  writing checkpoints to `workdir` (resumed like GIO-Ada's, its config recorded and compared
  as train_and_evaluate's); the final state."""
  changes = run_config.check_resume(config, workdir, allow_config_change)
  built = cyclegan.build_models(config)
  batches = pipeline.train_iterator(config)
  state = cyclegan.create_state(built, config, jax.random.key(config.seed), config.data.height,
                                config.data.width)
  loop = Loop(
      p_step=cyclegan.make_p_train_step(built, cyclegan.make_optimizers(config),
                                        config.cyclegan),
      to_step_batch=cyclegan.batch_from_pipeline, num_steps=config.cyclegan.num_steps,
      learning_rate_at=lambda step: cyclegan.learning_rate_at(config.cyclegan, step),
      pictures=lambda params, batch: cyclegan_pictures(built, params, batch),
      after_restore=lambda step: run_config.record(config, workdir, changes, step),
      length_field="cyclegan.num_steps")
  return run_loop(loop, state, batches, workdir, config)


def cyclegan_pictures(built: cyclegan.CycleGanModels, params, batch) -> dict[str, np.ndarray]:
  """Source, source -> target, target, target -> source (uint8) for TensorBoard."""
  to_target = cyclegan.apply_generator(built.generator, params["g_st"], batch["source_image"])
  to_source = cyclegan.apply_generator(built.generator, params["g_ts"], batch["target_image"])
  return {"source": images.image_to_uint8(batch["source_image"]),
          "source_translated": images.image_to_uint8(np.asarray(to_target)),
          "target": images.image_to_uint8(batch["target_image"]),
          "target_translated": images.image_to_uint8(np.asarray(to_source))}
