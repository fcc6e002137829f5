"""A small configuration that trains on a laptop CPU: the procedural benchmark, narrow nets.

`python -m gio_ada_jax.data.prepare --dataset procedural && python train.py --config
configs/cpu.py:+sd,joint --workdir /tmp/gio_ada_cpu`. What differs from the paper and why:
quarter-width networks with 6 residual blocks and 128x384 images (compute), random init of the
encoder (no ImageNet weights are downloaded), fewer steps.
"""

from gio_ada_jax import variants
from gio_ada_jax.configs import default


def get_config(variant: str = "+sd,joint"):
  """The procedural sim-to-real benchmark at CPU scale."""
  config = default.get_config()
  config.data.source, config.data.target = "procedural/source", "procedural/target"
  config.data.height = config.data.procedural.height
  config.data.width = config.data.procedural.width
  config.model.width = 0.25
  config.model.generator.num_blocks = 6
  config.cyclegan.num_blocks = 6
  config.cyclegan.num_steps = 2000
  config.model.task_net.encoder_init = "random"  # nothing is downloaded
  config.model.task_net.input_norm = "none"  # trained from scratch
  config.train.num_epochs, config.train.num_steps = 0, 2000
  config.train.log_every = 20
  config.train.checkpoint_every = 500
  return variants.apply_variant(config, variant)
