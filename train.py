"""Train GIO-Ada: python train.py --config configs/X.py --workdir DIR [--config.field=value].

Rerunning the same command with the same --workdir resumes from its newest checkpoint that
restores (a damaged newer one is named and moved to WORKDIR/checkpoints_unrestorable); a
config that computes differently from the one recorded in WORKDIR/config.json is refused
(--allow_config_change=FIELD,... changes fields on purpose). One run trains in a workdir at a
time (WORKDIR/train.lock; a second one is refused). Exit status: 0 finished (the task net is
exported), 2 a config or start-up error (also: the workdir is in use, or checkpoints none of
which restores), 3 a NaN/inf loss, 75 stopped by SIGTERM after a checkpoint (not finished;
rerun to resume), 130 stopped by Ctrl-C after a checkpoint of the step it was at (a second
Ctrl-C stops at once).
"""

import sys

from absl import flags, logging
from ml_collections import config_flags

from gio_ada_jax import cli, distributed, errors, trainer
from gio_ada_jax.train import run_config

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and logs go.")
flags.mark_flags_as_required(["config", "workdir"])
_ALLOW_CONFIG_CHANGE = flags.DEFINE_list("allow_config_change", [], run_config.ALLOW_FLAG_HELP)
_PROCESSES = distributed.define_flags()
flags.adopt_module_key_flags(distributed)  # list them in --help too


def main(argv):
  if not flags.FLAGS["verbosity"].present:
    # orbax logs every save and restore at INFO; --verbosity=0 brings them back.
    logging.set_verbosity(logging.WARNING)
  del argv
  if not _WORKDIR.value.strip():  # "" would write checkpoints into the current directory
    raise errors.UserError("--workdir is empty; give the run's own folder (checkpoints, logs "
                           "and the export go there).")
  try:  # before anything touches a device
    _PROCESSES.initialize()
  except ValueError as e:
    raise errors.UserError(str(e)) from e
  final = trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value, _ALLOW_CONFIG_CHANGE.value)
  if final is None:
    print(f"train.py: stopped by SIGTERM after checkpointing {_WORKDIR.value}; the run is not "
          f"finished (exit status {errors.PREEMPTED_EXIT_CODE}). Rerun the same command to "
          "resume.", file=sys.stderr)
    return errors.PREEMPTED_EXIT_CODE
  return 0


if __name__ == "__main__":
  cli.run(main, "train.py")
