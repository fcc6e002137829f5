"""D_img and D_out: CycleGAN's PatchGAN (default for both) and AdaptSegNet's FCDiscriminator."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from gio_ada_jax.models.generator import CYCLEGAN_KERNEL_INIT
from gio_ada_jax.models.layers import (Dtype, at_least_float32, conv2d, instance_norm,
                                       leaky_relu, scale_width)

KERNEL_SIZE = 4
MAX_CHANNEL_MULTIPLIER = 8


class PatchDiscriminator(nn.Module):
  """CycleGAN's NLayerDiscriminator with instance norm: a map of real/fake logits (N, h, w, 1).

  Layer n (1..n_layers) has ndf·min(2^n, 8) channels; the first n_layers-1 and the first
  conv halve the resolution, the last two keep it (kernel 4, padding 1).
  """

  ndf: int = 64
  n_layers: int = 3
  width: float = 1.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = lambda x, features, stride, name: conv2d(  # noqa: E731
        x, features, KERNEL_SIZE, stride=stride, padding=1, name=name,
        kernel_init=CYCLEGAN_KERNEL_INIT, bias_init=nn.initializers.zeros, dtype=self.dtype,
        param_dtype=self.param_dtype)
    input_size = x.shape[1:3]
    x = leaky_relu(conv(x.astype(self.dtype), scale_width(self.ndf, self.width), 2, "conv_0"))
    for n in range(1, self.n_layers + 1):
      channels = scale_width(self.ndf * min(2 ** n, MAX_CHANNEL_MULTIPLIER), self.width)
      stride = 2 if n < self.n_layers else 1
      x = leaky_relu(instance_norm(conv(x, channels, stride, f"conv_{n}")))
    logits = conv(x, 1, 1, f"conv_{self.n_layers + 1}")
    if 0 in logits.shape[1:3]:
      raise ValueError(
          f"PatchDiscriminator input of {input_size[0]}x{input_size[1]} is too small: with "
          f"n_layers={self.n_layers} it leaves no output patch; use at least "
          f"{3 * 2 ** self.n_layers} pixels per side.")
    return at_least_float32(logits)


class FCDiscriminator(nn.Module):
  """AdaptSegNet's fully convolutional discriminator: 5 convs k4 s2 p1, no norm, output at /32."""

  ndf: int = 64
  width: float = 1.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.astype(self.dtype)
    common = dict(stride=2, padding=1, dtype=self.dtype, param_dtype=self.param_dtype)
    for i, multiplier in enumerate((1, 2, 4, 8)):
      channels = scale_width(self.ndf * multiplier, self.width)
      x = leaky_relu(conv2d(x, channels, KERNEL_SIZE, name=f"conv{i + 1}", **common))
    logits = conv2d(x, 1, KERNEL_SIZE, name="classifier", **common)
    return at_least_float32(logits)
