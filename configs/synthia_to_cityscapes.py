"""SYNTHIA-RAND-CITYSCAPES -> Cityscapes (paper Table 4):
`--config configs/synthia_to_cityscapes.py:+sd,joint`.

Data: `prepare --dataset synthia_rand_cityscapes` and `--dataset cityscapes`.
"""

from configs import default, variants


def get_config(variant: str = "+sd,joint"):
  """16 classes (mIoU* over 13 of them), Cityscapes at half resolution (512x1024)."""
  config = default.get_config()
  config.model.num_classes = 16
  config.data.source = "synthia_rand_cityscapes"
  config.data.target = "cityscapes"
  config.data.target_eval_split = "validation"
  # Both domains are resized to Cityscapes' half resolution (the paper's target size); SYNTHIA
  # (1280x760) is resized to it too, since one input size serves both domains here.
  config.data.height, config.data.width = 512, 1024
  return variants.apply_variant(config, variant)
