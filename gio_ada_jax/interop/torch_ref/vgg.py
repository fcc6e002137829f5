"""torchvision's VGG16 (configuration 'D', no batch norm), written without torchvision.

Module indices and state_dict keys are torchvision's, so `vgg16-397923af.pth` loads unchanged.
"""

import torch
from torch import nn

from gio_ada_jax.models.layers import scale_width

# Configuration 'D': output channels of a 3x3 conv (+ ReLU), or 'M' for MaxPool2d(2, 2).
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
             512, 512, 512, "M")


def init_vgg_conv(conv: nn.Conv2d) -> None:
  """torchvision's conv init: kaiming normal (fan_out, relu), bias 0."""
  nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
  nn.init.zeros_(conv.bias)


def vgg16_features(width: float = 1.0) -> nn.Sequential:
  """VGG16's `features`: 13 conv+ReLU pairs and 5 floor-mode max pools, torchvision init."""
  layers = []
  in_channels = 3
  for entry in VGG16_CFG:
    if entry == "M":
      layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
      continue
    out_channels = scale_width(entry, width)
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
    init_vgg_conv(conv)
    layers += [conv, nn.ReLU(True)]
    in_channels = out_channels
  return nn.Sequential(*layers)


class VGG16(nn.Module):
  """torchvision's `vgg16()`: features, AdaptiveAvgPool2d((7, 7)), 3-layer classifier.

  `width` scales the conv channels and the two hidden fully connected layers (4096); the
  number of outputs is kept. Width 1.0 is torchvision exactly.
  """

  def __init__(self, num_classes: int = 1000, width: float = 1.0, dropout: float = 0.5):
    super().__init__()
    self.features = vgg16_features(width)
    self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
    hidden = scale_width(4096, width)
    self.classifier = nn.Sequential(
        nn.Linear(scale_width(512, width) * 7 * 7, hidden),
        nn.ReLU(True),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden),
        nn.ReLU(True),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )
    for linear in self.classifier:
      if isinstance(linear, nn.Linear):
        nn.init.normal_(linear.weight, 0.0, 0.01)
        nn.init.zeros_(linear.bias)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.avgpool(self.features(x))
    return self.classifier(torch.flatten(x, 1))
