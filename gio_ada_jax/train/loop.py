"""The training loop shared by GIO-Ada (trainer.py) and the CycleGAN baseline
(cyclegan/trainer.py): run_loop steps a compiled step described by a Loop, laid out over the
devices by its parallel.Layout (pmap, or jit over a device mesh).

Resumes from the workdir's latest checkpoint (parameters, optimiser states, step, RNG and the
data iterator), logs losses, steps/s, images/s and ETA from the first step, stops with a clear
message on a NaN/inf loss or gradient norm (the last good checkpoint stays), checkpoints every
`train.checkpoint_every` steps, at the end, and on SIGTERM (preemption; the loop returns) or a
first Ctrl-C (it raises KeyboardInterrupt once the checkpoint is written). A latest checkpoint
that does not restore (damaged files) is named and set aside, and the run resumes from the
newest one that does (`resume`). With `Loop.evaluate`, it also evaluates every
`Loop.evaluate_every` steps and at the last one (not at a step SIGTERM stopped at: that one's
checkpoint is there to evaluate).
"""

import dataclasses
import math
import signal
import time
from typing import Any, Callable

import jax
from absl import logging

from gio_ada_jax import config_checks
from gio_ada_jax import errors
from gio_ada_jax import workdir as workdir_lib
from gio_ada_jax import parallel
from gio_ada_jax.distributed import is_main_process, prefetch_to_devices
from gio_ada_jax.train import checkpoint, summaries


class NonFiniteError(errors.UserError, FloatingPointError):
  """A loss or gradient norm became NaN or inf."""
  exit_code = errors.NON_FINITE_EXIT_CODE


def check_finite(metrics: dict[str, float], step: int, last_checkpoint: int | None) -> None:
  """Raise naming every non-finite metric of `step` and what a rerun starts from."""
  bad = sorted(name for name, value in metrics.items() if not math.isfinite(value))
  if bad:
    if last_checkpoint is None:
      kept = ("No checkpoint was written yet, so a rerun starts from step 0; lower the "
              "learning rate or the adversarial weights first.")
    else:
      kept = (f"The last good checkpoint, step {last_checkpoint}, is kept in the workdir; lower "
              "the learning rate or the adversarial weights and rerun to resume from it.")
    raise NonFiniteError(f"step {step}: non-finite {', '.join(bad)} "
                         f"({', '.join(f'{n}={metrics[n]}' for n in bad)}); stopping. {kept}")


def format_duration(seconds: float) -> str:
  """Hours, minutes and seconds, with whole days in front ("2d 03:04:05"): a time of day would
  wrap every 24 hours."""
  days, rest = divmod(int(seconds), 24 * 3600)
  hours, rest = divmod(rest, 3600)
  return (f"{days}d " if days else "") + f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


def format_progress(step: int, num_steps: int, metrics: dict[str, float], steps_per_s: float,
                    images_per_s: float) -> str:
  """One console line: step, losses, speed and time left."""
  eta_s = (num_steps - step) / steps_per_s if steps_per_s > 0 else float("inf")
  eta = format_duration(eta_s) if math.isfinite(eta_s) else "?"
  losses = " ".join(f"{k[5:]}={v:.4f}" for k, v in sorted(metrics.items())
                    if k.startswith("loss_"))
  return (f"step {step}/{num_steps} {losses} | {steps_per_s:.2f} steps/s "
          f"{images_per_s:.1f} img/s | ETA {eta}")


class StopFlag:
  """Set by SIGTERM (preemption) or a first Ctrl-C: the loop checkpoints the step it is at and
  stops. A second Ctrl-C raises KeyboardInterrupt at once (Python's own handler is back). Where
  SIGINT is ignored (a job started with `&` from a script) it stays ignored."""

  def __init__(self):
    self.signal: int | None = None  # the first that arrived
    watched = [signal.SIGTERM]
    if callable(signal.getsignal(signal.SIGINT)):  # Python's, or cli.run's around it
      watched.append(signal.SIGINT)
    self._previous = {s: signal.signal(s, self._handle) for s in watched}

  def _handle(self, signum, frame):
    del frame
    if signum == signal.SIGINT:
      signal.signal(signal.SIGINT, self._previous[signal.SIGINT])
    self.signal = self.signal or signum

  def restore(self):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)


@dataclasses.dataclass(frozen=True)
class Loop:
  """What the training loop needs to know about one kind of training (GIO-Ada, CycleGAN)."""

  p_step: Callable  # (placed state, placed batch) -> (state, metrics): layout.compile_step's
  to_step_batch: Callable  # pipeline batch -> the step's batch
  num_steps: int
  learning_rate_at: Callable[[int], float]
  # (params, one device's step batch) -> {name: uint8 pictures}, for TensorBoard
  pictures: Callable | None = None
  # The freshly created state -> the state to start from (not called when resuming)
  on_fresh_start: Callable | None = None
  # Called (process 0) with the restored step, or None for a fresh start, before step one
  after_restore: Callable[[int | None], None] | None = None
  length_field: str = "train.num_steps"  # the config field num_steps comes from, for messages
  # Called on every process (evaluation is collective) with the step, the state's unreplicated
  # params and whether that step's checkpoint was saved, every `evaluate_every` steps (> 0) and
  # at the last step, after the step's checkpoint is saved.
  evaluate: Callable[[int, Any, bool], None] | None = None
  evaluate_every: int = 0
  # How p_step's state and batches lie on the devices; pmap over every device by default.
  layout: parallel.Layout = parallel.PmapLayout()


def evaluates_at(step: int, num_steps: int, every: int) -> bool:
  """Whether the loop evaluates after `step`: every `every` steps (0 = never) and at the end."""
  return every > 0 and (step % every == 0 or step == num_steps)


def resume(checkpointer: checkpoint.Checkpointer, template, workdir: str
           ) -> checkpoint.Restored | None:
  """The newest checkpoint that restores, or None without any. Says (process 0) which newer
  ones were skipped, why and where they were set aside (kept, out of the way of the resumed
  run, which writes their steps again), and the step it resumes from. Raises
  checkpoint.UnrestorableCheckpoint if there are checkpoints but none restores."""
  restored, skipped = checkpointer.restore_newest(template)
  moved = checkpointer.set_aside([s.step for s in skipped])
  if is_main_process():
    for s in skipped:
      print(checkpoint.skipped_message(s, f"moved it to {moved[s.step]} (kept, not deleted)"),
            flush=True)
    if restored is not None:
      print(f"Resumed from step {restored.step} in {workdir}.", flush=True)
  return restored


def run_loop(loop: Loop, state, batches, workdir: str, config):
  """Resume from `workdir`'s newest good checkpoint or start from `state`, then step until
  `loop.num_steps`, logging, checkpointing and stopping as the module docstring says; the
  final state (one single-device copy)."""
  data = config.data
  train = config.train
  checkpointer = checkpoint.Checkpointer(workdir_lib.checkpoints(workdir),
                                         train.keep_checkpoints)
  layout = loop.layout
  restored = resume(checkpointer, layout.checkpoint_template(state), workdir)
  if restored is not None:
    state = restored.state
    batches.set_state(restored.data)
  elif loop.on_fresh_start is not None:
    state = loop.on_fresh_start(state)
  start = int(state.step)
  if start > loop.num_steps:  # a shorter length: exporting (or going on) would mislabel the run
    kept = checkpointer.all_steps()
    checkpointer.close()
    raise config_checks.ConfigError(
        f"{workdir} has trained {start} steps already, past this config's {loop.num_steps} "
        f"({loop.length_field}); its checkpoints are never rewound. Set {loop.length_field} to "
        f"at least {start} to finish it, or train in a new workdir (kept checkpoints: steps "
        f"{', '.join(map(str, kept))}).")
  if loop.after_restore is not None and is_main_process():
    loop.after_restore(None if restored is None else restored.step)

  writer = summaries.open_writer(workdir_lib.tensorboard(workdir))
  stop = StopFlag()
  placed = layout.place_state(state)
  images_per_step = 2 * data.global_batch  # source + target
  last_time, last_step = time.perf_counter(), start
  device_batches = prefetch_to_devices(batches, data.device_prefetch, loop.to_step_batch,
                                       place=layout.place_batch)
  try:  # a NaN stop or a second Ctrl-C leaves too: the handlers are put back either way
    for step in range(start + 1, loop.num_steps + 1):
      batch, data_state = next(device_batches)
      # Everything the step reads is already on the devices: an implicit copy here would be a
      # bug (a host value creeping into the step), so it raises instead of costing time.
      with jax.transfer_guard("disallow"):
        placed, metrics = loop.p_step(placed, batch)
      checkpointer.check_saved()  # a failed save stops the run at once, not at the next save
      preempted = stop.signal is not None  # read once: a later signal waits for the next step
      save_now = step % train.checkpoint_every == 0 or step == loop.num_steps or preempted
      evaluate_now = (loop.evaluate is not None and not preempted
                      and evaluates_at(step, loop.num_steps, loop.evaluate_every))
      # Metrics are checked at every log line and before every save and evaluation, so no
      # checkpoint or report holds a state that came out of a NaN/inf step.
      if step % train.log_every == 0 or save_now or evaluate_now:
        metrics = {k: float(v) for k, v in layout.to_host(metrics).items()}
        check_finite(metrics, step, checkpointer.latest_step())
      if step % train.log_every == 0 or step == loop.num_steps:
        now = time.perf_counter()
        steps_per_s = (step - last_step) / max(now - last_time, 1e-9)
        last_time, last_step = now, step
        if is_main_process():
          print(format_progress(step, loop.num_steps, metrics, steps_per_s,
                                steps_per_s * images_per_step), flush=True)
        summaries.write_scalars(writer, step, metrics, loop.learning_rate_at(step))
      if writer is not None and loop.pictures is not None and step % train.image_every == 0:
        summaries.write_pictures(writer, step, loop.pictures(layout.host_state(placed).params,
                                                             layout.first_row(batch)))
      current = layout.host_state(placed) if save_now or evaluate_now else None
      if save_now:
        checkpointer.save(step, current, data_state)
      if evaluate_now:
        started = time.perf_counter()
        loop.evaluate(step, current.params, save_now)
        last_time += time.perf_counter() - started  # steps/s counts training time only
      if preempted:
        skipped = (f" Its evaluation is skipped (evaluate.py --step {step} evaluates the "
                   "checkpoint)." if loop.evaluate is not None
                   and evaluates_at(step, loop.num_steps, loop.evaluate_every) else "")
        logging.warning("%s: checkpointed step %d in %s; rerun to resume.%s",
                        "Ctrl-C" if stop.signal == signal.SIGINT else "SIGTERM", step, workdir,
                        skipped)
        break
  finally:
    stop.restore()
  if writer is not None:
    writer.close()
  checkpointer.wait()
  checkpointer.close()
  if stop.signal == signal.SIGINT:  # after the checkpoint is committed; cli.run says so (130)
    raise KeyboardInterrupt
  return layout.host_state(placed)
