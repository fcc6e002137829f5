"""The GIO-Ada networks in PyTorch, built from the upstream parts (mirrors gio_ada_jax.models).

Discriminators need no new classes: D_img is NLayerDiscriminator(3), D_out is
NLayerDiscriminator(num_classes + 1), and FCDiscriminator is AdaptSegNet's.
"""

import functools
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gio_ada_jax.interop.torch_ref.adaptsegnet import (FC_CHANNELS, Classifier_Module,
                                                      deeplab_vgg_features)
from gio_ada_jax.interop.torch_ref.cyclegan import ResnetGenerator
from gio_ada_jax.models.layers import scale_width
from gio_ada_jax.models.task_net import input_normalisation_affine


class GioAdaTaskNet(nn.Module):
  """G_task: NCHW RGB images in [-1, 1] -> (seg logits N×C×H×W, depth N×1×H×W).

  DeeplabVGG's features shared by two ASPP heads, outputs upsampled to the input size with
  bilinear align_corners=True. `input_norm` names the fixed affine map to what the encoder's
  pretrained weights expect (see gio_ada_jax.models.task_net.INPUT_NORMALISATIONS).
  """

  def __init__(self, num_classes: int, width: float = 1.0, input_norm: str = "torchvision",
               aspp_dilations: Sequence[int] = (6, 12, 18, 24), aspp_summed_branches: int = 4):
    super().__init__()
    flip_bgr, scale, offset = input_normalisation_affine(input_norm)
    self.flip_bgr = flip_bgr
    # Fixed constants, not weights: kept out of the state_dict.
    self.register_buffer("input_scale", torch.from_numpy(scale).view(1, 3, 1, 1),
                         persistent=False)
    self.register_buffer("input_offset", torch.from_numpy(offset).view(1, 3, 1, 1),
                         persistent=False)
    self.features = deeplab_vgg_features(width)
    dilations = list(aspp_dilations)
    channels = scale_width(FC_CHANNELS, width)
    self.classifier = Classifier_Module(channels, dilations, dilations, num_classes,
                                        aspp_summed_branches)
    self.depth_classifier = Classifier_Module(channels, dilations, dilations, 1,
                                              aspp_summed_branches)

  def normalise_input(self, images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] RGB -> the encoder's input (channel order, scale, mean and std)."""
    if self.flip_bgr:
      images = images.flip(1)
    return images * self.input_scale + self.input_offset

  def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    size = images.shape[-2:]
    features = self.features(self.normalise_input(images))
    upsample = functools.partial(F.interpolate, size=size, mode="bilinear", align_corners=True)
    return upsample(self.classifier(features)), upsample(self.depth_classifier(features))


def one_hot_labels(labels: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
  """N×H×W class ids -> N×C×H×W one-hot; 255 (ignore) or any id outside [0, C) is all zeros."""
  valid = (labels >= 0) & (labels < num_classes)
  one_hot = F.one_hot(torch.where(valid, labels, 0).long(), num_classes)
  one_hot = one_hot * valid.unsqueeze(-1)
  return one_hot.permute(0, 3, 1, 2).to(dtype)


class GioAdaGenerator(ResnetGenerator):
  """G_img: ResnetGenerator conditioned on one-hot labels and depth, keys `model.*` as upstream.

  The input is the channel concatenation (image, one-hot labels, depth), so it is a
  ResnetGenerator with input_nc = 3 + num_classes·use_labels + use_depth.
  """

  def __init__(self, num_classes: int, use_labels: bool = True, use_depth: bool = True,
               ngf: int = 64, n_blocks: int = 9, width: float = 1.0):
    input_nc = 3 + (num_classes if use_labels else 0) + (1 if use_depth else 0)
    super().__init__(input_nc, output_nc=3, ngf=ngf, n_blocks=n_blocks, width=width)
    self.num_classes = num_classes
    self.use_labels = use_labels
    self.use_depth = use_depth

  def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None,
              depth: torch.Tensor | None = None) -> torch.Tensor:
    """images N×3×H×W in [-1, 1], labels N×H×W int ids, depth N×1×H×W in [0, 1].

    Inputs the generator was not built for (labels without use_labels, ...) are ignored.
    """
    parts = [images]
    if self.use_labels:
      if labels is None:
        raise ValueError("GioAdaGenerator was built with use_labels=True but labels is None.")
      parts.append(one_hot_labels(labels, self.num_classes, images.dtype))
    if self.use_depth:
      if depth is None:
        raise ValueError("GioAdaGenerator was built with use_depth=True but depth is None.")
      if depth.dim() == 3:
        depth = depth.unsqueeze(1)  # Also accept N×H×W.
      parts.append(depth.to(images.dtype))
    return super().forward(torch.cat(parts, dim=1))
