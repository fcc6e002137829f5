"""Train GIO-Ada: python train.py --config configs/X.py --workdir DIR [--config.field=value].

Rerunning the same command with the same --workdir resumes from its latest checkpoint.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from gio_ada_jax import trainer

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and logs go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  try:
    trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except trainer.NonFiniteError as e:
    print(f"train.py: {e}", file=sys.stderr)
    return 3
  return 0


if __name__ == "__main__":
  sys.exit(app.run(main))
