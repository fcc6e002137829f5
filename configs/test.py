"""A tiny configuration for tests: narrow networks, two residual blocks, 32x48 procedural data."""

from configs import default, variants


def get_config(variant: str = "+sd,joint"):
  """Default settings with networks small enough for a CPU test suite."""
  config = variants.apply_variant(default.get_config(), variant)
  config.model.width = 0.0625  # 1/16 of every channel count.
  config.model.generator.num_blocks = 2
  config.data.height, config.data.width = 32, 48  # the PatchGANs need >= 24 pixels per side
  config.data.source, config.data.target = "procedural/source", "procedural/target"
  config.data.procedural.height, config.data.procedural.width = 32, 48
  config.data.procedural.num_train, config.data.procedural.num_validation = 8, 4
  config.train.num_epochs, config.train.num_steps = 0, 6
  config.data.global_batch = 4  # one image per device on the 4 devices of `make test`
  config.model.task_net.encoder_init = "random"
  config.train.log_every = 1
  config.train.checkpoint_every = 3
  config.train.image_every = 3
  config.cyclegan.num_blocks = 2
  config.cyclegan.num_steps = 4
  config.cyclegan.pool_size = 3  # full within the first steps, so swaps happen in tests
  return config
