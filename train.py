"""Train GIO-Ada: python train.py --config configs/X.py --workdir DIR [--config.field=value].

Rerunning the same command with the same --workdir resumes from its latest checkpoint. Exit
status: 0 finished (the task net is exported), 2 a config or start-up error, 3 a NaN/inf loss,
75 stopped by SIGTERM after a checkpoint (not finished; rerun to resume).
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from gio_ada_jax import config_checks, distributed, trainer, translate
from gio_ada_jax.data import interrupts, pipeline

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and logs go.")
flags.mark_flags_as_required(["config", "workdir"])
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None,
    "Multi-process runs: host:port where process 0 serves the coordinator. Give it with "
    "--num_processes and --process_id, or none of the three on one host or in a cluster "
    "JAX configures itself (Cloud TPU pod slices, srun, mpirun).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "Multi-process runs: how many processes in all.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "Multi-process runs: this process's index, 0 to N-1.")


def main(argv):
  if not flags.FLAGS["verbosity"].present:
    # orbax logs every save and restore at INFO; --verbosity=0 brings them back.
    logging.set_verbosity(logging.WARNING)
  del argv
  if not _WORKDIR.value.strip():  # "" would write checkpoints into the current directory
    print("train.py: --workdir is empty; give the run's own folder (checkpoints, logs and the "
          "export go there).", file=sys.stderr)
    return 2
  try:  # before anything touches a device
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  except ValueError as e:
    print(f"train.py: {e}", file=sys.stderr)
    return 2
  try:
    final = trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except (config_checks.ConfigError, pipeline.DatasetNotPrepared, pipeline.DatasetUnusable,
          translate.TranslationError) as e:
    print(f"train.py: {e}", file=sys.stderr)
    return 2
  except trainer.NonFiniteError as e:
    print(f"train.py: {e}", file=sys.stderr)
    return 3
  except interrupts.Terminated:  # while the 'cg' variant translated its source set
    print("train.py: stopped by SIGTERM while the 'cg' variant translated its source (the "
          f"CycleGAN is checkpointed; exit status {trainer.PREEMPTED_EXIT_CODE}). Rerun the "
          "same command to resume.", file=sys.stderr)
    return trainer.PREEMPTED_EXIT_CODE
  if final is None:
    print(f"train.py: stopped by SIGTERM after checkpointing {_WORKDIR.value}; the run is not "
          f"finished (exit status {trainer.PREEMPTED_EXIT_CODE}). Rerun the same command to "
          "resume.", file=sys.stderr)
    return trainer.PREEMPTED_EXIT_CODE
  return 0


if __name__ == "__main__":
  sys.exit(app.run(main))
