"""AdaptSegNet's DeeplabVGG and FCDiscriminator (wasidennis/AdaptSegNet).

State_dict keys are upstream's, so the released AdaptSegNet checkpoints load unchanged.
"""

import functools
from typing import Sequence

import torch
from torch import nn

from gio_ada_jax.interop.torch_ref.vgg import vgg16_features
from gio_ada_jax.models.layers import scale_width

POOL4_INDEX = 23  # In torchvision's VGG16 `features`.
POOL5_INDEX = 30
CONV5_INDICES = (23, 25, 27)  # conv5_1..conv5_3 after pool4 is removed.
FC_CHANNELS = 1024


class Classifier_Module(nn.Module):  # pylint: disable=invalid-name (upstream's name)
  """DeepLab-v2 ASPP: parallel dilated 3x3 convs whose outputs are summed.

  Upstream AdaptSegNet returns from inside its summation loop, so only branches 0 and 1 reach
  the output (the other two are in the state_dict but unused): that is summed_branches=2.
  ADVENT/DADA fixed the bug and sum all four: summed_branches=4.
  """

  def __init__(self, inplanes: int, dilation_series: Sequence[int],
               padding_series: Sequence[int], num_classes: int, summed_branches: int = 2):
    super().__init__()
    if not 1 <= summed_branches <= len(dilation_series):
      raise ValueError(
          f"summed_branches={summed_branches} must be between 1 and the number of branches "
          f"({len(dilation_series)}).")
    self.summed_branches = summed_branches
    self.conv2d_list = nn.ModuleList(
        nn.Conv2d(inplanes, num_classes, kernel_size=3, stride=1, padding=padding,
                  dilation=dilation, bias=True)
        for dilation, padding in zip(dilation_series, padding_series))
    for conv in self.conv2d_list:
      # Only the weights are re-initialised; biases keep PyTorch's default init.
      conv.weight.data.normal_(0, 0.01)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    out = self.conv2d_list[0](x)
    for conv in self.conv2d_list[1:self.summed_branches]:
      out = out + conv(x)
    return out


def deeplab_vgg_features(width: float = 1.0) -> nn.Sequential:
  """DeeplabVGG's `features`: VGG16 without pool4/pool5, conv5 dilated 2, fc6/fc7 convs.

  Output stride 8. fc6/fc7 are new 3x3 convs with dilation 4 and PyTorch's default init
  (not converted from VGG's fully connected layers); the VGG part keeps torchvision's init.
  """
  vgg_layers = list(vgg16_features(width))
  layers = vgg_layers[:POOL4_INDEX] + vgg_layers[POOL4_INDEX + 1:POOL5_INDEX]
  for index in CONV5_INDICES:
    # Changed in place, as upstream does, so the convs keep their VGG init.
    layers[index].dilation = (2, 2)
    layers[index].padding = (2, 2)
  vgg_channels = scale_width(512, width)
  fc_channels = scale_width(FC_CHANNELS, width)
  layers += [
      nn.Conv2d(vgg_channels, fc_channels, kernel_size=3, padding=4, dilation=4),
      nn.ReLU(True),
      nn.Conv2d(fc_channels, fc_channels, kernel_size=3, padding=4, dilation=4),
      nn.ReLU(True),
  ]
  return nn.Sequential(*layers)


class DeeplabVGG(nn.Module):
  """AdaptSegNet's DeeplabVGG: raw logits at output stride 8 (no upsampling, no input norm)."""

  def __init__(self, num_classes: int, width: float = 1.0, summed_branches: int = 2):
    super().__init__()
    self.features = deeplab_vgg_features(width)
    dilations = [6, 12, 18, 24]
    self.classifier = Classifier_Module(scale_width(FC_CHANNELS, width), dilations, dilations,
                                        num_classes, summed_branches)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.classifier(self.features(x))


class FCDiscriminator(nn.Module):
  """AdaptSegNet's fully convolutional discriminator: 5 convs k4 s2 p1, output H/32, no norm.

  No sigmoid (the losses take logits); PyTorch's default init.
  """

  def __init__(self, num_classes: int, ndf: int = 64, width: float = 1.0):
    super().__init__()
    c1, c2, c3, c4 = (scale_width(ndf * m, width) for m in (1, 2, 4, 8))
    conv = functools.partial(nn.Conv2d, kernel_size=4, stride=2, padding=1)
    self.conv1 = conv(num_classes, c1)
    self.conv2 = conv(c1, c2)
    self.conv3 = conv(c2, c3)
    self.conv4 = conv(c3, c4)
    self.classifier = conv(c4, 1)
    self.leaky_relu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
      x = self.leaky_relu(conv(x))
    return self.classifier(x)
