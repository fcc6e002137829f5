"""Virtual KITTI -> KITTI (paper Tables 1-3): `--config configs/vkitti_to_kitti.py:+sd,joint`.

The variant after the colon is "INPUT,OUTPUT", which sets config.variant (see
gio_ada_jax/variants.py); the default is the paper's final model. Data: `prepare --dataset
vkitti` and `--dataset kitti_semantics`.
"""

from configs import default, variants


def get_config(variant: str = "+sd,joint"):
  """Virtual KITTI -> KITTI with the paper's settings (docs/paper_to_code.md): 10 classes;
  input 375x1242, KITTI's size (the project's choice)."""
  config = default.get_config()  # default.py already describes this benchmark
  return variants.apply_variant(config, variant)
