"""Checkpoints of the whole training state with orbax: parameters, optimiser states, step, RNG
and the data iterator's state, so a resumed run continues exactly where it stopped.

Orbax writes each step into a temporary folder and commits it only when complete, so a save
interrupted by a kill never loads as a checkpoint. Every process calls save and restore.
"""

import os
from typing import Callable

import jax
import orbax.checkpoint as ocp

from gio_ada_jax.state import GioAdaState


def _with_raw_key(state: GioAdaState) -> GioAdaState:
  # Typed PRNG keys are stored as their raw bits.
  return state.replace(rng=jax.random.key_data(state.rng))


def _savable(state: GioAdaState) -> GioAdaState:
  # Host numpy arrays: orbax writes them once, from process 0; device arrays local to each
  # host cannot be saved in a multi-host run.
  return jax.device_get(_with_raw_key(state))


def abstract_state(make_state: Callable[[], GioAdaState]) -> GioAdaState:
  """Shapes and dtypes of the state `make_state` builds, as checkpoints hold it; nothing is
  computed (for restoring without initialising every network)."""
  return jax.eval_shape(lambda: _with_raw_key(make_state()))


class Checkpointer:
  """The workdir's checkpoints: save every N steps, keep the last K, restore the latest."""

  def __init__(self, directory: str, keep: int | None):
    self._manager = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """The steps of every kept (committed) checkpoint, ascending."""
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: GioAdaState, data_state: dict) -> None:
    """Start writing step `step` (asynchronously; `wait` blocks until it is committed)."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(_savable(state)), data=ocp.args.JsonSave(data_state)))

  def restore(self, template: GioAdaState, step: int | None = None
              ) -> tuple[GioAdaState, dict] | None:
    """(state, data iterator state) of `step` (default: the latest), or None if there is none."""
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _savable(template))
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
    state = restored["state"]
    return state.replace(rng=jax.random.wrap_key_data(state.rng)), restored["data"]

  def restore_params(self, abstract: GioAdaState, step: int) -> dict:
    """The parameter trees of checkpoint `step` (host arrays), given `abstract_state(...)`."""
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), abstract)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract)))
    return jax.device_get(restored["state"].params)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
