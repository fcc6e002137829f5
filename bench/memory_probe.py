"""Compiled temporary memory vs the process's peak device memory for one forward pass.

    python -m bench.memory_probe {task_net,encoder,aspp} [--height 375 --width 1242]

Tells XLA's own buffer needs (compiled.memory_analysis) apart from what the process touched
(memory_stats peak), which also counts the convolution autotuner's scratch on GPUs.
"""

import sys

import jax
import jax.numpy as jnp
from absl import app, flags

from gio_ada_jax.models.task_net import ASPP, FC_CHANNELS, TaskNet, VggEncoder

_HEIGHT = flags.DEFINE_integer("height", 375, "Input height.")
_WIDTH = flags.DEFINE_integer("width", 1242, "Input width.")
OUTPUT_STRIDE = 8


def main(argv):
  part = argv[1] if len(argv) > 1 else "task_net"
  x = jnp.zeros((1, _HEIGHT.value, _WIDTH.value, 3))
  if part == "task_net":
    module = TaskNet(10)
  elif part == "encoder":
    module = VggEncoder()
  elif part == "aspp":
    module = ASPP(10)
    x = jnp.zeros((1, -(-_HEIGHT.value // OUTPUT_STRIDE), -(-_WIDTH.value // OUTPUT_STRIDE),
                   FC_CHANNELS))
  else:
    raise app.UsageError(f"unknown part {part!r}: task_net, encoder or aspp")
  variables = jax.jit(module.init)(jax.random.key(0), x)
  forward = jax.jit(module.apply)
  compiled = forward.lower(variables, x).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes / 2**30
  jax.block_until_ready(forward(variables, x))
  stats = jax.devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use", float("nan")) / 2**30
  print(f"{part}: compiled temporaries {temp:.2f} GiB, process peak {peak:.2f} GiB")


if __name__ == "__main__":
  sys.exit(app.run(main))
