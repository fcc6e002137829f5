"""The embedded default: the procedural sim-to-real benchmark at a size that trains on 2 CPU
cores (`make demo`, `python -m gio_ada_jax.demo`).

What differs from the paper's settings (configs/default.py) and why, all for a laptop's compute:
- data: the procedural domains at 64x192 (KITTI's ~3:1 aspect) instead of real datasets at
  375x1242; 1000 training and 200 validation images per domain;
- networks: a quarter of every channel count, 6 residual blocks in G_img instead of 9, the task
  net's encoder from random initialisation (no ImageNet weights are downloaded), hence no
  input normalisation;
- G_img: `model.generator.residual_output` - it outputs clip(x + tanh(head)) with a
  zero-initialised head, so it starts as the identity and only has to learn the change of
  appearance. With the paper's plain ResnetGenerator, 600 steps give blurry brown images (it must
  first learn to redraw the scene), the task net trains on nothing else, and input-level
  adaptation lost 4 mIoU against the baseline over 3 seeds (README, "What we tried");
- training: 400 steps of 4 source + 4 target images instead of 10 epochs of 1 + 1 (212,600 steps
  on Virtual KITTI) (`make demo` must finish in 20 minutes on 2 cores; on fresh clones there,
  set-up included, it took 7.4 minutes on 2026-11-30 and 13.5 to 16.5 minutes on earlier days;
  the two rows with G_img take longest).
The losses, their weights (lambda), Adam's learning rate and the variants are the paper's; the
Adam betas are configs/default.py's.
"""

from gio_ada_jax import variants
from gio_ada_jax.configs import cpu


def get_config(variant: str = "+sd,joint"):
  """The procedural benchmark at demo size: configs/cpu.py's networks, smaller data."""
  config = cpu.get_config(None)
  data = config.data
  data.procedural.height, data.procedural.width = 64, 192
  data.procedural.num_train, data.procedural.num_validation = 1000, 200
  data.height, data.width = data.procedural.height, data.procedural.width
  data.global_batch = 4
  config.model.generator.residual_output = True
  # XLA's own transposed convolution, as in the README's 3-seed run: the sub-pixel form
  # computes the same function with other rounding, which GAN training amplifies into other
  # per-seed numbers. At this size it saves only ~7% of a step (BENCHMARKS.md).
  config.model.generator.upsampling = "dilated"
  # The 'cg' row (`python -m gio_ada_jax.demo --cyclegan`): CycleGAN gets as many steps as the
  # task net and, like G_img above, generators that start as the identity, so that the
  # comparison of the two translators is like for like.
  config.cyclegan.residual_output = True
  config.cyclegan.num_steps = 400
  config.train.num_epochs, config.train.num_steps = 0, 400
  config.train.log_every = 50
  config.train.checkpoint_every = 400
  config.train.image_every = 200
  config.eval.per_device_batch = 8
  return variants.apply_variant(config, variant)
