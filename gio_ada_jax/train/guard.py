"""The one entry a training run passes before it computes anything: its config checked
(config_checks), its workdir held (workdir_lock: one run per workdir) and compared with the run
recorded there (run_config); the record is written once the run has restored its checkpoint."""

import contextlib
import dataclasses
from typing import Any, Iterator, Sequence

from gio_ada_jax import config_checks
from gio_ada_jax.train import run_config, workdir_lock


@dataclasses.dataclass(frozen=True)
class GuardedRun:
  """A run that passed the guard: its config as given, its workdir, the ImageNet VGG16 file the
  encoder starts from (None: random initialisation), the fields allowed to change on purpose
  (--allow_config_change) and the changes found."""

  config: Any
  workdir: str
  vgg16_path: str | None
  allowed: tuple[str, ...]
  changes: dict[str, tuple[Any, Any]]

  def record(self, from_step: int | None) -> None:
    """Record the config (and the allowed changes from `from_step`) in the workdir; called once
    the checkpoint has restored, so a change that cannot resume is never recorded."""
    run_config.record(self.config, self.workdir, self.changes, from_step)


@contextlib.contextmanager
def guarded_run(config, workdir: str, allow_config_change: Sequence[str] = ()
                ) -> Iterator[GuardedRun]:
  """Check `config` (a ConfigError names every bad field; a missing VGG16 file says how to get
  it), hold `workdir`'s lock for the block (WorkdirLockError if another run holds it), and
  compare `config` with the run recorded there (a ConfigError names each differing field
  unless `allow_config_change` names it)."""
  config_checks.check_config(config)  # before anything is read or compiled
  vgg16_path = config_checks.vgg16_weights_path(config.model.task_net)
  with workdir_lock.hold(workdir):  # before anything is written
    changes = run_config.check_resume(config, workdir, allow_config_change)
    yield GuardedRun(config, workdir, vgg16_path, tuple(allow_config_change), changes)
