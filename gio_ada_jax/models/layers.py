"""Building blocks shared by the GIO-Ada networks (NHWC everywhere).

Each block reproduces one PyTorch op exactly (see ../shared notes, 'Known numerics pitfalls'):
reflection padding, InstanceNorm2d(affine=False), bilinear upsampling with align_corners=True.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any
Initializer = Callable[..., jax.Array]


def scale_width(channels: int, width: float) -> int:
  """Channel count of a layer under the width multiplier (never below 1)."""
  return max(1, int(round(channels * width)))


def at_least_float32(x: jax.Array) -> jax.Array:
  """x in float32, or in float64 when it already is (bf16 and f16 are widened)."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def reflect_pad(x: jax.Array, pad: int) -> jax.Array:
  """ReflectionPad2d(pad) on an NHWC tensor (the edge pixel is not repeated)."""
  return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


def instance_norm(x: jax.Array, eps: float = 1e-5) -> jax.Array:
  """InstanceNorm2d(affine=False): per-sample, per-channel, biased variance.

  Statistics are taken in float32 whatever the compute dtype: in bf16 the mean of a large
  feature map loses too many bits.
  """
  x32 = at_least_float32(x)
  mean = jnp.mean(x32, axis=(1, 2), keepdims=True)
  var = jnp.mean(jnp.square(x32 - mean), axis=(1, 2), keepdims=True)
  return ((x32 - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


def align_corners_matrix(in_size: int, out_size: int, dtype=np.float32) -> np.ndarray:
  """[out, in] linear-interpolation weights with align_corners=True source coordinates."""
  if out_size == 1 or in_size == 1:
    src = np.zeros(out_size)
  else:
    src = np.arange(out_size) * (in_size - 1) / (out_size - 1)
  lo = np.clip(np.floor(src).astype(np.int64), 0, in_size - 1)
  hi = np.minimum(lo + 1, in_size - 1)
  frac = src - lo
  weights = np.zeros((out_size, in_size), np.float64)
  weights[np.arange(out_size), lo] += 1.0 - frac
  weights[np.arange(out_size), hi] += frac
  return weights.astype(dtype)


def resize_bilinear_align_corners(x: jax.Array, height: int, width: int) -> jax.Array:
  """Bilinear resize of NHWC `x` matching PyTorch `interpolate(..., align_corners=True)`.

  `jax.image.resize` follows align_corners=False (and antialiases when shrinking), so the
  interpolation is written as two small matrix products, which is also fast on accelerators.
  """
  in_h, in_w = x.shape[1], x.shape[2]
  if (in_h, in_w) == (height, width):
    return x
  # float32 weights (float64 for float64 x, which float32 weights would round to 1e-8).
  weights_dtype = jnp.promote_types(x.dtype, jnp.float32)
  rows = jnp.asarray(align_corners_matrix(in_h, height, weights_dtype), x.dtype)
  cols = jnp.asarray(align_corners_matrix(in_w, width, weights_dtype), x.dtype)
  precision = jax.lax.Precision.HIGHEST
  x = jnp.einsum("oh,nhwc->nowc", rows, x, precision=precision)
  return jnp.einsum("pw,nowc->nopc", cols, x, precision=precision)


def torch_default_kernel_init() -> Initializer:
  """PyTorch's default Conv2d weight init: kaiming_uniform(a=sqrt(5)) = U(±1/sqrt(fan_in))."""
  return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_default_bias_init(fan_in: int) -> Initializer:
  """PyTorch's default Conv2d bias init: U(±1/sqrt(fan_in))."""
  bound = 1.0 / np.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def conv2d(
    x: jax.Array,
    features: int,
    kernel_size: int,
    *,
    name: str,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    use_bias: bool = True,
    kernel_init: Initializer | None = None,
    bias_init: Initializer | None = None,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
) -> jax.Array:
  """A PyTorch-style Conv2d applied to NHWC `x`, as submodule `name` of the calling module.

  Explicit symmetric zero padding and dilation as in PyTorch; `kernel_init`/`bias_init` of None
  give PyTorch's default init (which needs the input channel count, hence a function, not a
  module attribute).
  """
  fan_in = x.shape[-1] * kernel_size * kernel_size
  return nn.Conv(
      features,
      (kernel_size, kernel_size),
      strides=(stride, stride),
      padding=((padding, padding), (padding, padding)),
      kernel_dilation=(dilation, dilation),
      use_bias=use_bias,
      kernel_init=kernel_init or torch_default_kernel_init(),
      bias_init=bias_init or torch_default_bias_init(fan_in),
      dtype=dtype,
      param_dtype=param_dtype,
      name=name,
  )(x)


def crop_to(x: jax.Array, height: int, width: int) -> jax.Array:
  """Keep the top-left height×width of an NHWC map (drops a transposed conv's extra row/col)."""
  return x[:, :height, :width, :]


def leaky_relu(x: jax.Array) -> jax.Array:
  """LeakyReLU(0.2), the slope used by every GIO-Ada discriminator."""
  return nn.leaky_relu(x, negative_slope=0.2)
