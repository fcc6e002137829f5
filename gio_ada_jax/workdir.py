"""The layout of a run's workdir, shared by the trainer (writer) and the evaluator (reader).

    WORKDIR/checkpoints/STEP/        orbax checkpoints of the whole training state
    WORKDIR/checkpoints_unrestorable/STEP/  damaged ones that training skipped, set aside
    WORKDIR/export/task_net.msgpack  G_task's params when training completed
    WORKDIR/export/model_config.json the config.model they belong to
    WORKDIR/tensorboard/             training summaries; tensorboard/eval: evaluation curve
    WORKDIR/eval/                    evaluation reports, curve.json, pictures
    WORKDIR/train.lock               who is training in it, while they are (workdir_lock.py)
"""

import os


def checkpoints(workdir: str) -> str:
  return os.path.join(workdir, "checkpoints")


def export(workdir: str) -> str:
  return os.path.join(workdir, "export")


EXPORTED_PARAMS = "task_net.msgpack"  # inside export()
EXPORTED_MODEL_CONFIG = "model_config.json"  # inside export()


def tensorboard(workdir: str, run: str = "") -> str:
  """The TensorBoard log folder (`run`: a sub-run such as "eval")."""
  return os.path.join(workdir, "tensorboard", run) if run else os.path.join(workdir, "tensorboard")


def evaluation(workdir: str) -> str:
  return os.path.join(workdir, "eval")


def lock(workdir: str) -> str:
  """The training run's lock file (gio_ada_jax/train/workdir_lock.py)."""
  return os.path.join(workdir, "train.lock")
