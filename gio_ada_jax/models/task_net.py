"""G_task: a VGG16 encoder in AdaptSegNet's DeeplabVGG form shared by two ASPP decoders.

Segmentation (C channels) and depth (1 channel) heads are DeepLab-v2 ASPP modules (the paper,
section 3.5: "the only difference is the number of output channel") on the output-stride-8
encoder features (AdaptSegNet's DeeplabVGG). Both outputs are upsampled to the input
size with bilinear align_corners=True, as the PyTorch segmentation-adaptation code does.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gio_ada_jax.models.layers import (Dtype, at_least_float32, conv2d,
                                      resize_bilinear_align_corners, scale_width)

# The fixed input normalisation that maps the [-1, 1] RGB images of this project to what the
# encoder's pretrained weights expect: (channel order, pixel scale, per-channel mean, std).
INPUT_NORMALISATIONS = {
    # torchvision's ImageNet VGG16 (vgg16-397923af.pth): RGB in [0, 1], ImageNet mean/std.
    "torchvision": ("rgb", 1.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # Caffe VGG16 as AdaptSegNet feeds it: BGR, 0-255, minus the Caffe mean, no std.
    "caffe": ("bgr", 255.0, (104.00698793, 116.66876762, 122.67891434), (1.0, 1.0, 1.0)),
    # Images go in unchanged (training from scratch).
    "none": ("rgb", 2.0, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0)),
}


def input_normalisation_affine(name: str) -> tuple[bool, np.ndarray, np.ndarray]:
  """(flip RGB to BGR?, scale, offset) with normalised = x[..., order] * scale + offset.

  For x in [-1, 1]: pixel = (x + 1) / 2 * s and (pixel - mean) / std = x * s / (2 std) +
  (s / 2 - mean) / std. Shared by the Flax net and the PyTorch reference so both agree.
  """
  order, pixel_scale, mean, std = INPUT_NORMALISATIONS[name]
  mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
  scale = pixel_scale / (2.0 * std)
  offset = (pixel_scale / 2.0 - mean) / std
  return order == "bgr", scale.astype(np.float32), offset.astype(np.float32)


def normalise_input(images: jax.Array, name: str) -> jax.Array:
  """Map NHWC RGB images in [-1, 1] to the encoder's expected input."""
  flip, scale, offset = input_normalisation_affine(name)
  if flip:
    images = images[..., ::-1]
  return images * jnp.asarray(scale, images.dtype) + jnp.asarray(offset, images.dtype)


# VGG16 configuration 'D' as DeeplabVGG keeps it: pool4 and pool5 removed, conv5 dilated 2.
# Entries: (name, output channels, dilation) for a 3x3 convolution + ReLU, or 'pool' for
# MaxPool2d(2, 2) with floor rounding.
VGG16_DEEPLAB_LAYERS = (
    ("conv1_1", 64, 1), ("conv1_2", 64, 1), "pool",
    ("conv2_1", 128, 1), ("conv2_2", 128, 1), "pool",
    ("conv3_1", 256, 1), ("conv3_2", 256, 1), ("conv3_3", 256, 1), "pool",
    ("conv4_1", 512, 1), ("conv4_2", 512, 1), ("conv4_3", 512, 1),
    ("conv5_1", 512, 2), ("conv5_2", 512, 2), ("conv5_3", 512, 2),
)
OUTPUT_STRIDE = 2 ** VGG16_DEEPLAB_LAYERS.count("pool")  # 8: the smallest side it takes
FC_CHANNELS = 1024  # fc6 and fc7, 3x3 convolutions with dilation 4.
FC_DILATION = 4


class VggEncoder(nn.Module):
  """DeeplabVGG's feature extractor: VGG16 convs, fc6/fc7 as dilated convs, output stride 8."""

  width: float = 1.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    # torchvision's VGG init (kaiming normal, fan_out); pretrained weights usually replace it.
    vgg_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
    common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    for layer in VGG16_DEEPLAB_LAYERS:
      if layer == "pool":
        x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
        continue
      name, channels, dilation = layer
      x = conv2d(x, scale_width(channels, self.width), 3, name=name, padding=dilation,
                 dilation=dilation, kernel_init=vgg_init, bias_init=nn.initializers.zeros,
                 **common)
      x = nn.relu(x)
    # fc6/fc7 are new layers with PyTorch's default init, not VGG's fully connected weights.
    for name in ("fc6", "fc7"):
      x = conv2d(x, scale_width(FC_CHANNELS, self.width), 3, name=name, padding=FC_DILATION,
                 dilation=FC_DILATION, **common)
      x = nn.relu(x)
    return x


class ASPP(nn.Module):
  """DeepLab-v2's ASPP classifier: parallel dilated 3x3 convs whose outputs are summed."""

  num_outputs: int
  dilations: Sequence[int] = (6, 12, 18, 24)
  # AdaptSegNet's Classifier_Module returns inside its loop, so only the first two branches
  # reach its output; 2 reproduces its released checkpoints, 4 is DeepLab-v2 (the paper).
  summed_branches: int = 4
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if not 1 <= self.summed_branches <= len(self.dilations):
      raise ValueError(
          f"model.task_net.aspp_summed_branches={self.summed_branches} must be between 1 and "
          f"the number of ASPP dilations ({len(self.dilations)}).")
    # Every branch is built so the parameters match the PyTorch state_dict; under jit the
    # unused ones are dead code and get zero gradient, as in PyTorch.
    branches = [
        conv2d(x, self.num_outputs, 3, name=f"branch_{i}", padding=d, dilation=d,
               kernel_init=nn.initializers.normal(0.01), dtype=self.dtype,
               param_dtype=self.param_dtype)
        for i, d in enumerate(self.dilations)
    ]
    return sum(branches[1:self.summed_branches], branches[0])


class TaskNet(nn.Module):
  """G_task: images in [-1, 1] (NHWC) -> (segmentation logits, depth), both at input size.

  Outputs are float32 whatever the compute dtype (float64 in float64), since they feed softmax
  and the losses.
  """

  num_classes: int
  width: float = 1.0
  input_norm: str = "torchvision"
  aspp_dilations: Sequence[int] = (6, 12, 18, 24)
  aspp_summed_branches: int = 4
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array,
               upsample_to_input: bool = True) -> tuple[jax.Array, jax.Array]:
    """(logits, depth) at the input size; with `upsample_to_input=False` at the heads' own
    (output stride 8) size, for evaluation, which upsamples once, straight to the labels'."""
    height, width = images.shape[1], images.shape[2]
    x = normalise_input(at_least_float32(images), self.input_norm).astype(self.dtype)
    features = VggEncoder(self.width, self.dtype, self.param_dtype, name="encoder")(x)
    head = dict(dilations=tuple(self.aspp_dilations), summed_branches=self.aspp_summed_branches,
                dtype=self.dtype, param_dtype=self.param_dtype)
    seg_logits = ASPP(self.num_classes, name="seg_head", **head)(features)
    depth = ASPP(1, name="depth_head", **head)(features)
    seg_logits, depth = at_least_float32(seg_logits), at_least_float32(depth)
    if not upsample_to_input:
      return seg_logits, depth
    seg_logits = resize_bilinear_align_corners(seg_logits, height, width)
    depth = resize_bilinear_align_corners(depth, height, width)
    return seg_logits, depth
