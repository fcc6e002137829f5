"""Forward + backward time of each convolution kind of the GIO-Ada step, JAX against PyTorch.

    JAX_PLATFORMS=cpu python -m bench.conv_layers

Full-width layer shapes at 256x512 (G_img's stem, down convs, residual-block conv and head, a
VGG conv), plus instance norm and reflection padding; batch 1, float32, mean of 3 runs after
one warm-up; PyTorch with 2 threads. Written to find where the CPU step loses to PyTorch
(BENCHMARKS.md).
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

from gio_ada_jax.models import layers

RUNS = 3
# name, height, width, input channels, output channels, kernel, stride
CONVOLUTIONS = (
    ("stem 7x7 14->64", 256, 512, 14, 64, 7, 1),
    ("down 3x3 s2 64->128", 256, 512, 64, 128, 3, 2),
    ("down 3x3 s2 128->256", 128, 256, 128, 256, 3, 2),
    ("block 3x3 256->256", 64, 128, 256, 256, 3, 1),
    ("head 7x7 64->3", 256, 512, 64, 3, 7, 1),
    ("vgg 3x3 64->64", 256, 512, 64, 64, 3, 1),
)


def milliseconds(run) -> float:
  """Mean wall time of `run()` over RUNS calls after one warm-up call."""
  run()
  start = time.perf_counter()
  for _ in range(RUNS):
    run()
  return (time.perf_counter() - start) / RUNS * 1e3


def convolution_times(height, width, cin, cout, kernel, stride) -> tuple[float, float]:
  """(JAX ms, PyTorch ms) of one convolution's forward and both gradients."""
  x = jnp.asarray(np.random.rand(1, height, width, cin).astype(np.float32))
  w = jnp.asarray(np.random.rand(kernel, kernel, cin, cout).astype(np.float32) * 0.01)
  pad = 0 if kernel == 7 else 1  # the 7x7 convs follow an explicit reflection pad

  def loss(w, x):
    y = jax.lax.conv_general_dilated(x, w, (stride, stride), ((pad, pad), (pad, pad)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.sum(y * y)

  grads = jax.jit(jax.grad(loss, argnums=(0, 1)))
  x_torch = torch.rand(1, cin, height, width, requires_grad=True)
  conv = torch.nn.Conv2d(cin, cout, kernel, stride, pad)

  def torch_step():
    conv.zero_grad()
    y = conv(x_torch)
    (y * y).sum().backward()

  return milliseconds(lambda: jax.block_until_ready(grads(w, x))), milliseconds(torch_step)


def elementwise_times() -> dict[str, tuple[float, float]]:
  """(JAX ms, PyTorch ms) of instance norm and reflection padding, forward and backward."""
  x = jnp.asarray(np.random.rand(1, 256, 512, 64).astype(np.float32))
  x_torch = torch.rand(1, 64, 256, 512, requires_grad=True)
  norm_grad = jax.jit(jax.grad(lambda x: jnp.sum(layers.instance_norm(x) ** 2)))
  pad_grad = jax.jit(jax.grad(lambda x: jnp.sum(layers.reflect_pad(x, 3) ** 2)))
  torch_norm = torch.nn.InstanceNorm2d(64)
  return {
      "instance norm 64ch": (
          milliseconds(lambda: jax.block_until_ready(norm_grad(x))),
          milliseconds(lambda: (torch_norm(x_torch) ** 2).sum().backward())),
      "reflect pad 3, 64ch": (
          milliseconds(lambda: jax.block_until_ready(pad_grad(x))),
          milliseconds(lambda: (torch.nn.functional.pad(x_torch, (3, 3, 3, 3), mode="reflect")
                                ** 2).sum().backward())),
  }


def main() -> None:
  torch.set_num_threads(2)
  for name, *shape in CONVOLUTIONS:
    jax_ms, torch_ms = convolution_times(*shape)
    print(f"{name:<24} jax {jax_ms:8.1f} ms   torch {torch_ms:8.1f} ms", flush=True)
  for name, (jax_ms, torch_ms) in elementwise_times().items():
    print(f"{name:<24} jax {jax_ms:8.1f} ms   torch {torch_ms:8.1f} ms", flush=True)


if __name__ == "__main__":
  main()
