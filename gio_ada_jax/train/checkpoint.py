"""Checkpoints of the whole training state with orbax: parameters, optimiser states, step (the
RNG of states that have one: CycleGAN's image pools) and the data iterator's state, so a resumed
run continues exactly where it stopped.

Orbax writes each step into a temporary folder and commits it only when complete, so a save
interrupted by a kill never loads as a checkpoint. Every process calls save and restore.

A committed checkpoint can still go bad later (a truncated or overwritten file, a lost item
folder). Orbax notices some of that, but flipped bytes in an array's data file restore without
complaint as wrong values, so each checkpoint also holds a `checksums` item: a SHA-256 of every
array and of the data iterator's state, written in the same commit. A restore compares the
values it read with them. A checkpoint without that item does not restore: it is damaged, or
was written by an earlier version of this project, whose layouts (no checksums; an unused RNG in
GioAdaState) this one does not read.

A save that fails (a full disk, a file size limit) raises CheckpointNotSaved at the first step
after orbax's background writer reports it (`check_saved`, every step), and at the next save
or the end of training at the latest. Orbax keeps the older checkpoints when a save fails; the
failed step's temporary folder is removed, so that the disk has room again.

`restore_newest` walks from the latest checkpoint to older ones until one restores, and
`set_aside` moves the ones that did not into CHECKPOINTS_unrestorable/ (never deleted: orbax
would otherwise collide with them when the resumed run saves that step again, and its
garbage collection could delete them).
"""

import dataclasses
import errno
import hashlib
import json
import logging as std_logging
import os
import re
import shutil
import time
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from gio_ada_jax import errors
from gio_ada_jax import workdir as workdir_lib
from gio_ada_jax.distributed import is_main_process
from gio_ada_jax.errors import UserError
from gio_ada_jax.train.state import GioAdaState

CHECKSUMS_ITEM = "checksums"
UNRESTORABLE_SUFFIX = "_unrestorable"  # CHECKPOINTS + this: where bad steps are set aside


class UnrestorableCheckpoint(UserError, ValueError):
  """A checkpoint (or every checkpoint of a folder) cannot be restored."""


class CheckpointNotSaved(UserError, OSError):
  """A checkpoint could not be written; the older ones are kept."""
  exit_code = errors.IO_ERROR_EXIT_CODE


def _write_error(error: BaseException) -> str:
  """What the operating system said when orbax (tensorstore) could not write: its strerror
  where the chain of causes carries an errno, else the first line of the error."""
  seen = error
  while seen is not None:
    code = re.search(r"os_error_code='?(\d+)", str(seen))
    if code:
      return os.strerror(int(code.group(1)))
    if isinstance(seen, OSError) and seen.strerror:
      return seen.strerror
    seen = seen.__cause__ or seen.__context__
  return _short(error)


def _bytes(count: float) -> str:
  unit, size = ("GiB", 2**30) if count >= 2**30 else ("MiB", 2**20)
  return f"{count / size:.1f} {unit}"


def _disk(directory: str) -> str:
  """The file system that holds `directory`: its mount point and free space."""
  mount = os.path.realpath(directory)
  while not os.path.ismount(mount):
    mount = os.path.dirname(mount)
  try:
    usage = shutil.disk_usage(directory)
  except OSError:
    return f"the file system mounted at {mount}"
  return f"the file system mounted at {mount} ({_bytes(usage.free)} free of {_bytes(usage.total)})"


@dataclasses.dataclass(frozen=True)
class Skipped:
  """A checkpoint that did not restore: its step, its folder and why."""

  step: int
  folder: str
  reason: str


@dataclasses.dataclass(frozen=True)
class Restored:
  """What a restore read and verified: the step, the state, the data iterator state (None when
  not read)."""

  step: int
  state: Any
  data: dict | None


def _with_raw_key(state):
  # Typed PRNG keys are stored as their raw bits.
  return state.replace(rng=jax.random.key_data(state.rng)) if hasattr(state, "rng") else state


def _savable(state: GioAdaState) -> GioAdaState:
  # Host numpy arrays: orbax writes them once, from process 0; device arrays local to each
  # host cannot be saved in a multi-host run.
  return jax.device_get(_with_raw_key(state))


def abstract_state(make_state: Callable[[], GioAdaState]) -> GioAdaState:
  """Shapes and dtypes of the state `make_state` builds, as checkpoints hold it; nothing is
  computed (for restoring without initialising every network)."""
  return jax.eval_shape(lambda: _with_raw_key(make_state()))


def _array_digest(x) -> str:
  x = np.ascontiguousarray(np.asarray(x))  # at least 1-d
  digest = hashlib.sha256(f"{x.dtype.str}{x.shape}".encode())
  digest.update(x.reshape(-1).view(np.uint8))
  return digest.hexdigest()


def _data_digest(data: dict) -> str:
  return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def checksums(state, data: dict) -> dict:
  """SHA-256 of every array of a (raw-key) state tree by its path, and of the data state."""
  arrays = {jax.tree_util.keystr(path): _array_digest(x)
            for path, x in jax.tree_util.tree_leaves_with_path(state)}
  return {"state": arrays, "data": _data_digest(data)}


def checksum_mismatches(stored: dict, state, data: dict | None) -> list[str]:
  """What of `state` (and `data`, unless None) differs from the `stored` checksums."""
  computed = checksums(state, {} if data is None else data)
  expected = stored["state"]
  bad = sorted(path for path in set(expected) | set(computed["state"])
               if expected.get(path) != computed["state"].get(path))
  if data is not None and stored.get("data") != computed["data"]:
    bad.append("the data iterator state")
  return bad


def shape_mismatches(state, abstract) -> list[str]:
  """The arrays of `state` whose shapes differ from `abstract`'s (orbax restores an array with
  its stored shape whatever the shape asked for)."""
  wanted = {jax.tree_util.keystr(path): tuple(x.shape)
            for path, x in jax.tree_util.tree_leaves_with_path(abstract)}
  return [f"{path} {np.shape(x)} (config: {wanted[path]})"
          for path, x in ((jax.tree_util.keystr(p), x)
                          for p, x in jax.tree_util.tree_leaves_with_path(state))
          if path in wanted and tuple(np.shape(x)) != wanted[path]]


def _short(error: BaseException) -> str:
  # A KeyError's str() is the repr of its message.
  text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
  lines = text.strip().splitlines()
  text = lines[0] if lines else ""
  return f"{type(error).__name__}: {text[:200]}{'...' if len(text) > 200 else ''}"


def _on_mesh(abstract) -> bool:
  """Whether a restore target has arrays with a sharding (Checkpointer._abstract's)."""
  return any(getattr(x, "sharding", None) is not None for x in jax.tree.leaves(abstract))


def _all_processes(ok: bool) -> bool:
  """Whether `ok` holds in every process (each process restores; they must agree)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


def none_restores(directory: str, skipped: list[Skipped]) -> str:
  """The error when every checkpoint of `directory` failed to restore (steps that failed alike
  are named together)."""
  steps_by_reason = {}
  for s in skipped:
    steps_by_reason.setdefault(s.reason, []).append(str(s.step))
  return (f"{directory}: no checkpoint can be restored: "
          + "; ".join(f"step{'s' if len(steps) > 1 else ''} {', '.join(steps)} ({reason})"
                      for reason, steps in steps_by_reason.items())
          + ". Nothing was moved or deleted. When every step fails alike, the config may not be "
          "the one the run was trained with (use that one), or an earlier version of "
          "gio_ada_jax wrote them (resume with that version); otherwise their files are "
          "damaged.")


def skipped_message(skipped: Skipped, fate: str) -> str:
  """The line that says a checkpoint was skipped, why, and `fate` (what became of it)."""
  return (f"Skipped checkpoint {skipped.folder}: it cannot be restored ({skipped.reason}); "
          f"{fate}.")


class Checkpointer:
  """The workdir's checkpoints: save every N steps, keep the last K, restore the newest one
  that restores."""

  def __init__(self, directory: str, keep: int | None):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))
    self._saving = None  # the step whose asynchronous save may not have finished yet

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """The steps of every kept (committed) checkpoint, ascending."""
    return sorted(self._manager.all_steps())

  def folder(self, step: int) -> str:
    """Where checkpoint `step` lies (orbax's default step names: the number)."""
    return os.path.join(self.directory, str(step))

  def save(self, step: int, state: GioAdaState, data_state: dict) -> None:
    """Start writing step `step` (asynchronously; `wait` blocks until it is committed).
    CheckpointNotSaved when this save or the one before it failed."""
    self.wait()  # orbax waits for the previous save anyway; this says which step failed
    savable = _savable(state)
    self._saving = step
    needed = sum(np.asarray(x).nbytes for x in jax.tree.leaves(savable))
    free = shutil.disk_usage(self.directory).free
    if free < needed:  # refused before writing: orbax's failing writers would fill the log
      raise self._not_saved(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC),
                                    f"its arrays take {_bytes(needed)}, and {_bytes(free)} is "
                                    "free"))
    try:
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(savable), data=ocp.args.JsonSave(data_state),
          **{CHECKSUMS_ITEM: ocp.args.JsonSave(checksums(savable, data_state))}))
    except Exception as e:  # pylint: disable=broad-except  (orbax's errors vary by storage)
      raise self._not_saved(e) from e

  def check_saved(self) -> None:
    """CheckpointNotSaved if the save in flight has failed (cheap; called every step)."""
    if self._saving is not None and not self._manager.is_saving_in_progress():
      self.wait()

  def _not_saved(self, error: BaseException) -> CheckpointNotSaved:
    """The error for the failed save of `self._saving`, after removing its temporary folder."""
    step, self._saving = self._saving, None
    # The failed save's orphaned write tasks would each log "exception was never retrieved"
    # when collected at exit, after this error's paragraph; the run stops here anyway.
    std_logging.getLogger("asyncio").disabled = True
    unfinished = self.folder(step) + ".orbax-checkpoint-tmp"  # orbax's name while writing
    # Write tasks of the failed save may still be creating files in it: removed until it has
    # stayed away for 0.3 s (10 s at most).
    deadline, away_since = time.monotonic() + 10, None
    while is_main_process() and time.monotonic() < deadline:
      if os.path.isdir(unfinished):
        shutil.rmtree(unfinished, ignore_errors=True)
        away_since = None
      elif away_since is None:
        away_since = time.monotonic()
      elif time.monotonic() - away_since > 0.3:
        break
      time.sleep(0.05)
    kept = [s for s in self.all_steps() if s != step]
    last = (f"the last checkpoint written, step {kept[-1]} ({self.folder(kept[-1])}), is kept"
            if kept else "no earlier checkpoint was written")
    cause = _write_error(error)
    if isinstance(error, OSError) and error.errno == errno.ENOSPC and error.filename:
      cause += f" ({error.filename})"  # what the check before writing measured
    fix = ("raise the shell's file size limit (`ulimit -f`)" if cause == os.strerror(errno.EFBIG)
           else "free space there")
    return CheckpointNotSaved(
        f"checkpoint {step} could not be written to {self.directory}: {cause}. Training "
        f"stopped; {last}. That folder is on {_disk(self.directory)}: {fix}, then rerun the "
        "same command to " + ("resume from the last checkpoint." if kept
                              else "train again (from step 0)."))

  def _restore(self, step: int, abstract, with_data: bool) -> Restored:
    """Checkpoint `step` read into `abstract` (shapes and dtypes) and verified; raises
    UnrestorableCheckpoint naming the folder and what failed."""
    if not os.path.isdir(os.path.join(self.folder(step), CHECKSUMS_ITEM)):
      raise UnrestorableCheckpoint(
          f"{self.folder(step)}: has no {CHECKSUMS_ITEM} item, so its values cannot be "
          "verified: it is damaged, or an earlier version of gio_ada_jax wrote it (train "
          "again, or resume with the version that wrote it)")
    items = {"state": ocp.args.StandardRestore(abstract),
             CHECKSUMS_ITEM: ocp.args.JsonRestore()}
    if with_data:
      items["data"] = ocp.args.JsonRestore()
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # orbax raises many types for damaged files and misfitting trees
      if not _on_mesh(abstract):
        raise UnrestorableCheckpoint(f"{self.folder(step)}: {_short(e)}") from e
      # Read into a mesh's shardings, orbax wraps a damaged file's error in a TensorStore spec
      # and refuses an array of another shape without naming it: read once more as host
      # arrays, which say what is wrong as under pmap (or restore, the fault having passed).
      items["state"] = ocp.args.StandardRestore(self._shapes(abstract))
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
      except Exception as e2:  # as above
        raise UnrestorableCheckpoint(f"{self.folder(step)}: {_short(e2)}") from e2
    state, data = restored["state"], restored["data"] if with_data else None
    misfits = shape_mismatches(state, abstract)
    if misfits:
      raise UnrestorableCheckpoint(
          f"{self.folder(step)}: its arrays have other shapes than this config's: "
          f"{', '.join(misfits[:2])}{f' and {len(misfits) - 2} more' if len(misfits) > 2 else ''}")
    stored = restored[CHECKSUMS_ITEM]
    if not (isinstance(stored, dict) and isinstance(stored.get("state"), dict)):
      raise UnrestorableCheckpoint(f"{self.folder(step)}: its checksums item is damaged")
    bad = checksum_mismatches(stored, state, data)
    if bad:
      raise UnrestorableCheckpoint(
          f"{self.folder(step)}: checksum mismatch, damaged files: {', '.join(bad[:3])}"
          f"{f' and {len(bad) - 3} more' if len(bad) > 3 else ''} read back other values "
          "than were saved")
    if hasattr(state, "rng"):
      state = state.replace(rng=jax.random.wrap_key_data(state.rng))
    return Restored(step, state, data)

  def _newest(self, restore: Callable[[int], Restored], steps: list[int] | None
              ) -> tuple[Restored | None, list[Skipped]]:
    """The newest of `steps` (default: all) that `restore` reads in every process, and those
    skipped before it (all of them when none restores)."""
    skipped, deleted = [], set()
    for _ in range(10):  # a walk begins again when a training run deletes what it reads
      restored, skipped, vanished = self._walk(restore, steps, deleted)
      if restored is not None or not vanished:
        return restored, skipped
      deleted.add(vanished)
      self._manager.reload()  # the running training has written newer ones meanwhile
    return None, skipped

  def deleted_while_read(self, step: int) -> str:
    """Why checkpoint `step` vanished: the training run writing this workdir deleted it."""
    lock = workdir_lib.lock(os.path.dirname(self.directory))
    held = f" ({lock} is held)" if os.path.exists(lock) else ""
    return (f"checkpoint {step} ({self.folder(step)}) was deleted while it was read: a training "
            f"run writing this workdir{held} keeps only its newest train.keep_checkpoints "
            "checkpoints")

  def _walk(self, restore, steps, deleted: set[int]):
    """(the newest restored or None, the skipped, a step deleted while read or None)."""
    skipped = []
    for step in sorted(self.all_steps() if steps is None else steps, reverse=True):
      if step in deleted:
        continue
      try:
        restored, reason = restore(step), ""
      except UnrestorableCheckpoint as e:
        restored, reason = None, str(e).removeprefix(f"{self.folder(step)}: ")
      if _all_processes(restored is not None):
        return restored, skipped, None
      if steps is None and not _all_processes(os.path.isdir(self.folder(step))):
        return None, skipped, step
      if reason and not is_main_process():  # process 0 says the rest
        logging.warning("Process %d: %s: %s", jax.process_index(), self.folder(step), reason)
      skipped.append(Skipped(step, self.folder(step), reason or
                             "restores here, but not in every process: see their logs"))
    return None, skipped, None

  def restore(self, template: GioAdaState, step: int | None = None
              ) -> tuple[GioAdaState, dict] | None:
    """(state, data iterator state) of `step` (default: the latest), or None if there is none;
    raises UnrestorableCheckpoint if it does not restore."""
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    restored = self._restore(step, self._abstract(template), with_data=True)
    return restored.state, restored.data

  def restore_newest(self, template: GioAdaState) -> tuple[Restored | None, list[Skipped]]:
    """The newest checkpoint that restores (state and data iterator state) and the newer ones
    skipped; (None, []) without checkpoints. Raises UnrestorableCheckpoint when there are
    checkpoints but none restores (never a silent start from step 0)."""
    abstract = self._abstract(template)
    restored, skipped = self._newest(
        lambda step: self._restore(step, abstract, with_data=True), None)
    if restored is None and skipped:
      raise UnrestorableCheckpoint(none_restores(self.directory, skipped) + " To train again "
                                   "from step 0, move the folder aside.")
    return restored, skipped

  def restore_params(self, abstract: GioAdaState, step: int) -> dict:
    """The parameter trees of checkpoint `step` (host arrays), given `abstract_state(...)`;
    raises UnrestorableCheckpoint if it does not restore."""
    restored = self._restore(step, self._shapes(abstract), with_data=False)
    return jax.device_get(restored.state.params)

  def newest_params(self, abstract: GioAdaState, steps: list[int] | None = None
                    ) -> tuple[Restored | None, list[Skipped]]:
    """The newest checkpoint among `steps` (default: all) that restores, its state holding the
    parameters (host arrays), and the newer ones skipped; (None, all skipped) when none does."""
    shapes = self._shapes(abstract)
    restored, skipped = self._newest(
        lambda step: self._restore(step, shapes, with_data=False), steps)
    if restored is not None:
      restored = dataclasses.replace(restored, state=restored.state.replace(
          params=jax.device_get(restored.state.params)))
    return restored, skipped

  def set_aside(self, steps: list[int]) -> dict[int, str]:
    """Move checkpoints `steps` out of orbax's folder into CHECKPOINTS_unrestorable/STEP (a
    numbered suffix if that exists); their new folders. Process 0 moves; every process then
    forgets them."""
    aside = self.directory + UNRESTORABLE_SUFFIX
    moved = {}
    for step in steps:
      target = os.path.join(aside, str(step))
      n = 1
      while os.path.exists(target):
        n += 1
        target = os.path.join(aside, f"{step}.{n}")
      moved[step] = target
    if steps:
      if is_main_process():
        os.makedirs(aside, exist_ok=True)
        for step, target in moved.items():
          os.rename(self.folder(step), target)
      multihost_utils.sync_global_devices("gio_ada_jax: unrestorable checkpoints set aside")
      self._manager.reload()
    return moved

  @staticmethod
  def _abstract(template: GioAdaState):
    """What a restore reads into: host arrays, except where `template` lies on a device mesh
    (parallel.MeshLayout's replicated arrays), whose sharding orbax then restores into."""
    def struct(x):
      if isinstance(x, jax.Array) and isinstance(x.sharding, jax.sharding.NamedSharding):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
      return ocp.utils.to_shape_dtype_struct(jax.device_get(x))
    return jax.tree.map(struct, _with_raw_key(template))

  @staticmethod
  def _shapes(abstract: GioAdaState):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), abstract)

  def wait(self) -> None:
    """Block until the save in flight is committed; CheckpointNotSaved if it failed."""
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except  (orbax's errors vary by storage)
      if self._saving is None:
        raise
      raise self._not_saved(e) from e
    self._saving = None

  def close(self) -> None:
    self._manager.close()
