"""Evaluate GIO-Ada checkpoints: python evaluate.py --config configs/X.py --workdir DIR.

Evaluation is not written yet; until it is, this entry point says so and exits with status 2.
"""

import sys

from absl import app


def main(argv):
  del argv
  print("evaluate.py: evaluation is not implemented yet (see the open 'Evaluation' issue).",
        file=sys.stderr)
  return 2


if __name__ == "__main__":
  sys.exit(app.run(main))
