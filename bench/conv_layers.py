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

torch.set_num_threads(2)
def tj(f, *a, n=3):
  jax.block_until_ready(f(*a)); s=time.perf_counter()
  for _ in range(n): jax.block_until_ready(f(*a))
  return (time.perf_counter()-s)/n*1e3
def tt(f, n=3):
  f(); s=time.perf_counter()
  for _ in range(n): f()
  return (time.perf_counter()-s)/n*1e3
cases = [  # name, H, W, cin, cout, k, stride
  ("stem 7x7 14->64", 256, 512, 14, 64, 7, 1),
  ("down 3x3 s2 64->128", 256, 512, 64, 128, 3, 2),
  ("down 3x3 s2 128->256", 128, 256, 128, 256, 3, 2),
  ("block 3x3 256->256", 64, 128, 256, 256, 3, 1),
  ("head 7x7 64->3", 256, 512, 64, 3, 7, 1),
  ("vgg 3x3 64->64", 256, 512, 64, 64, 3, 1),
]
for name, h, w, ci, co, k, s in cases:
  x = jnp.asarray(np.random.rand(1, h, w, ci).astype(np.float32))
  wt = jnp.asarray(np.random.rand(k, k, ci, co).astype(np.float32) * 0.01)
  pad = 0 if k == 7 else 1
  def f(wt, x):
    y = jax.lax.conv_general_dilated(x, wt, (s, s), ((pad, pad), (pad, pad)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.sum(y * y)
  g = jax.jit(jax.grad(f, argnums=(0, 1)))
  xt = torch.rand(1, ci, h, w, requires_grad=True); conv = torch.nn.Conv2d(ci, co, k, s, pad)
  def tf():
    conv.zero_grad(); y = conv(xt); (y * y).sum().backward()
  print(f"{name:<24} jax {tj(g, wt, x):8.1f} ms   torch {tt(tf):8.1f} ms", flush=True)
x = jnp.asarray(np.random.rand(1, 256, 512, 64).astype(np.float32))
g = jax.jit(jax.grad(lambda x: jnp.sum(layers.instance_norm(x) ** 2)))
xt = torch.rand(1, 64, 256, 512, requires_grad=True); inorm = torch.nn.InstanceNorm2d(64)
def tf():
  (inorm(xt) ** 2).sum().backward()
print(f"{'instance norm 64ch':<24} jax {tj(g, x):8.1f} ms   torch {tt(tf):8.1f} ms")
g = jax.jit(jax.grad(lambda x: jnp.sum(layers.reflect_pad(x, 3) ** 2)))
def tf():
  (torch.nn.functional.pad(xt, (3, 3, 3, 3), mode="reflect") ** 2).sum().backward()
print(f"{'reflect pad 3, 64ch':<24} jax {tj(g, x):8.1f} ms   torch {tt(tf):8.1f} ms")
