"""Train GIO-Ada: python train.py --config configs/X.py --workdir DIR.

The trainer (the jit-compiled, pmap-sharded step over the four networks) is not written yet;
until it is, this entry point says so and exits with status 2.
"""

import sys

from absl import app


def main(argv):
  del argv
  print("train.py: the GIO-Ada trainer is not implemented yet (see the open 'Training' issue). "
        "The networks, weight conversion and PyTorch parity are available: "
        "python -m gio_ada_jax.parity --help", file=sys.stderr)
  return 2


if __name__ == "__main__":
  sys.exit(app.run(main))
