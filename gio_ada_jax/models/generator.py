"""G_img: CycleGAN's ResnetGenerator, conditioned on the source labels and depth (paper 3.2).

The input is the image plus, chosen by the variant (variants.py), the one-hot label map (C
channels) and the depth normalised to [0, 1] (1 channel): the paper's gd (neither) / +s / +d /
+sd input levels. With neither, it is exactly CycleGAN's generator (also used by the CycleGAN
baseline).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from gio_ada_jax.models.layers import (Dtype, conv2d, crop_to, instance_norm, reflect_pad,
                                       scale_width)

# CycleGAN's init_weights('normal', 0.02): conv weights N(0, 0.02), biases 0.
CYCLEGAN_KERNEL_INIT = nn.initializers.normal(0.02)
NUM_DOWNSAMPLINGS = 2


def conditioned_input(images: jax.Array, labels: jax.Array | None, depth: jax.Array | None,
                      num_classes: int, use_labels: bool, use_depth: bool) -> jax.Array:
  """Concatenate image ⊕ one-hot(labels) ⊕ depth along channels (NHWC).

  Ignore pixels (255, or any id outside [0, C)) get an all-zero one-hot vector.
  """
  parts = [images]
  if use_labels:
    if labels is None:
      raise ValueError("G_img was built with use_labels=True (input levels +s, +sd), so it "
                       "needs the source labels.")
    parts.append(jax.nn.one_hot(labels, num_classes, dtype=images.dtype))
  if use_depth:
    if depth is None:
      raise ValueError("G_img was built with use_depth=True (input levels +d, +sd), so it "
                       "needs the source depth.")
    parts.append(depth.astype(images.dtype))
  return jnp.concatenate(parts, axis=-1)


# The stride-2 transposed convolution below (k3, padding (1, 2), unflipped kernel W) gives, per
# axis, y[2p] = W[1] x[p] and y[2p+1] = W[0] x[p] + W[2] x[p+1]. SUBPIXEL_TAPS[phase][offset] is
# the kernel row (or column) that output phase 0/1 takes from input offset 0/1 (None: none).
SUBPIXEL_TAPS = ((1, None), (0, 2))


def subpixel_kernel(kernel: jax.Array) -> jax.Array:
  """A [3, 3, I, O] transposed-conv kernel as a [2, 2, I, 4 * O] stride-1 conv kernel whose
  output channels are the four (row phase, column phase) outputs, in that order."""
  zeros = jnp.zeros_like(kernel[0, 0])

  def tap(row_phase, col_phase, a, b):
    ky, kx = SUBPIXEL_TAPS[row_phase][a], SUBPIXEL_TAPS[col_phase][b]
    return zeros if ky is None or kx is None else kernel[ky, kx]

  rows = [[jnp.concatenate([tap(r, c, a, b) for r in (0, 1) for c in (0, 1)], axis=-1)
           for b in (0, 1)] for a in (0, 1)]
  return jnp.stack([jnp.stack(row) for row in rows])


class ConvTranspose2x(nn.Module):
  """ConvTranspose(k3, stride 2, padding (1, 2)) with CycleGAN's output size 2H x 2W.

  Same parameters ("kernel" [3, 3, I, O], "bias") and the same function as
  nn.ConvTranspose(features, (3, 3), (2, 2), ((1, 2), (1, 2))). `subpixel` computes it as one
  stride-1 2x2 convolution into the four output phases and a depth-to-space: XLA:CPU runs the
  kernel gradient of the dilated form about 10x slower than an ordinary convolution of 4x its
  FLOPs (BENCHMARKS.md), which made the generator the CPU step's bottleneck.
  """

  features: int
  subpixel: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", CYCLEGAN_KERNEL_INIT, (3, 3, x.shape[-1], self.features),
                        self.param_dtype).astype(self.dtype)
    bias = self.param("bias", nn.initializers.zeros, (self.features,),
                      self.param_dtype).astype(self.dtype)
    x = x.astype(self.dtype)
    dimensions = ("NHWC", "HWIO", "NHWC")
    if not self.subpixel:
      y = jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 2), (1, 2)),
                                       lhs_dilation=(2, 2), dimension_numbers=dimensions)
      return y + bias
    batch, height, width, _ = x.shape
    phases = jax.lax.conv_general_dilated(x, subpixel_kernel(kernel), (1, 1),
                                          ((0, 1), (0, 1)), dimension_numbers=dimensions)
    y = phases.reshape(batch, height, width, 2, 2, self.features)
    y = y.transpose(0, 1, 3, 2, 4, 5).reshape(batch, 2 * height, 2 * width, self.features)
    return y + bias


class ImageTransformNet(nn.Module):
  """ResnetGenerator (reflect padding, instance norm, 2 down, N residual blocks, 2 up, tanh).

  Output has exactly the input's height and width: after each transposed conv the map is cropped
  to the size it had at that resolution on the way down, which is a no-op when height and width
  are multiples of 4 (CycleGAN itself turns 375 rows into 376).
  """

  num_classes: int
  use_labels: bool = True
  use_depth: bool = True
  ngf: int = 64
  num_blocks: int = 9
  width: float = 1.0
  residual_output: bool = False
  subpixel_upsampling: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, labels: jax.Array | None = None,
               depth: jax.Array | None = None) -> jax.Array:
    conv = lambda x, features, kernel, **kw: conv2d(  # noqa: E731
        x, features, kernel, kernel_init=CYCLEGAN_KERNEL_INIT, bias_init=nn.initializers.zeros,
        dtype=self.dtype, param_dtype=self.param_dtype, **kw)
    x = conditioned_input(images.astype(self.dtype), labels, depth, self.num_classes,
                          self.use_labels, self.use_depth)
    channels = scale_width(self.ngf, self.width)
    x = nn.relu(instance_norm(conv(reflect_pad(x, 3), channels, 7, name="stem")))

    sizes = [(x.shape[1], x.shape[2])]
    for i in range(NUM_DOWNSAMPLINGS):
      channels = scale_width(self.ngf * 2 ** (i + 1), self.width)
      x = conv(x, channels, 3, stride=2, padding=1, name=f"down_{i}")
      sizes.append((x.shape[1], x.shape[2]))
      x = nn.relu(instance_norm(x))

    for b in range(self.num_blocks):
      y = nn.relu(instance_norm(conv(reflect_pad(x, 1), channels, 3, name=f"block_{b}_conv_0")))
      y = instance_norm(conv(reflect_pad(y, 1), channels, 3, name=f"block_{b}_conv_1"))
      x = x + y  # No ReLU after the residual sum, as in CycleGAN.

    for i in range(NUM_DOWNSAMPLINGS):
      channels = scale_width(self.ngf * 2 ** (NUM_DOWNSAMPLINGS - 1 - i), self.width)
      # ConvTranspose2d(k3, s2, p1, output_padding=1) == padding (k-1-p, k-1-p+op) = (1, 2)
      # with a spatially flipped kernel (convert.py flips it).
      x = ConvTranspose2x(channels, subpixel=self.subpixel_upsampling, dtype=self.dtype,
                          param_dtype=self.param_dtype, name=f"up_{i}")(x)
      x = crop_to(x, *sizes[-2 - i])
      x = nn.relu(instance_norm(x))

    if not self.residual_output:
      return jnp.tanh(conv(reflect_pad(x, 3), 3, 7, name="head"))
    # Not in the paper: x̂ = clip(x + tanh(head)), head zero-initialised, so G_img starts as
    # the identity and learns an appearance change instead of having to learn to draw the
    # scene first (a few hundred steps on a CPU are not enough for that; see configs/demo.py).
    residual = conv2d(reflect_pad(x, 3), 3, 7, kernel_init=nn.initializers.zeros,
                      bias_init=nn.initializers.zeros, dtype=self.dtype,
                      param_dtype=self.param_dtype, name="head")
    return jnp.clip(images.astype(self.dtype) + jnp.tanh(residual), -1.0, 1.0)
