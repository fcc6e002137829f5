"""ADVENT/DADA's `get_fc_discriminator` (valeoai/ADVENT, advent/model/discriminator.py).

The same network as AdaptSegNet's FCDiscriminator, as an nn.Sequential: keys 0/2/4/6/8 map to
conv1/conv2/conv3/conv4/classifier.
"""

from torch import nn

from gio_ada_jax.models.layers import scale_width

# FCDiscriminator attribute -> index in this Sequential.
FC_DISCRIMINATOR_KEY_MAP = {"conv1": "0", "conv2": "2", "conv3": "4", "conv4": "6",
                            "classifier": "8"}


def get_fc_discriminator(num_classes: int, ndf: int = 64, width: float = 1.0) -> nn.Sequential:
  """5 convs k4 s2 p1 (num_classes -> 64 -> 128 -> 256 -> 512 -> 1, × width), LeakyReLU(0.2)."""
  channels = [num_classes] + [scale_width(ndf * m, width) for m in (1, 2, 4, 8)]
  layers = []
  for cin, cout in zip(channels[:-1], channels[1:]):
    layers += [nn.Conv2d(cin, cout, kernel_size=4, stride=2, padding=1),
               nn.LeakyReLU(negative_slope=0.2, inplace=True)]
  layers.append(nn.Conv2d(channels[-1], 1, kernel_size=4, stride=2, padding=1))
  return nn.Sequential(*layers)
