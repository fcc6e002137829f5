"""D_img and D_out: CycleGAN's PatchGAN (default for both) and AdaptSegNet's FCDiscriminator."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from gio_ada_jax.models.generator import CYCLEGAN_KERNEL_INIT
from gio_ada_jax.models.layers import (Dtype, at_least_float32, conv2d, instance_norm,
                                       leaky_relu, scale_width)

KERNEL_SIZE = 4
MAX_CHANNEL_MULTIPLIER = 8
# FCDiscriminator: five stride-2 convolutions (kernel 4, padding 1) each take n rows to n // 2,
# so 32 is the smallest side that leaves one logit.
FC_SMALLEST_INPUT = 2 ** 5


def patch_smallest_input(n_layers: int) -> int:
  """The smallest side a PatchGAN of `n_layers` takes: n_layers halvings (n // 2 each), then two
  kernel-4 convolutions of stride 1 and padding 1 that take a row off each, leave one logit."""
  return 3 * 2 ** n_layers


def _check_not_empty(network: str, input_size, logits, smallest: int) -> None:
  if 0 in logits.shape[1:3]:
    raise ValueError(f"{network} input of {input_size[0]}x{input_size[1]} is too small: it "
                     f"leaves no logit; use at least {smallest} pixels per side.")


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
    _check_not_empty(f"PatchDiscriminator (n_layers={self.n_layers})", input_size, logits,
                     patch_smallest_input(self.n_layers))
    return at_least_float32(logits)


class FCDiscriminator(nn.Module):
  """AdaptSegNet's fully convolutional discriminator: 5 convs k4 s2 p1, no norm, output at /32."""

  ndf: int = 64
  width: float = 1.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    input_size = x.shape[1:3]
    x = x.astype(self.dtype)
    common = dict(stride=2, padding=1, dtype=self.dtype, param_dtype=self.param_dtype)
    for i, multiplier in enumerate((1, 2, 4, 8)):
      channels = scale_width(self.ndf * multiplier, self.width)
      x = leaky_relu(conv2d(x, channels, KERNEL_SIZE, name=f"conv{i + 1}", **common))
    logits = conv2d(x, 1, KERNEL_SIZE, name="classifier", **common)
    if not self.is_initializing():  # its parameters do not depend on the input's size
      _check_not_empty("FCDiscriminator", input_size, logits, FC_SMALLEST_INPUT)
    return at_least_float32(logits)
