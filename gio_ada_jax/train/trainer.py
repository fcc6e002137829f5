"""train_and_evaluate(config, workdir): the training loop around the pmapped GIO-Ada step
(and, for the 'cg' variant, around the CycleGAN step first: train_cyclegan).

Resumes from the workdir's latest checkpoint (parameters, optimiser states, step, RNG and the
data iterator), logs losses, steps/s, images/s and ETA from the first step, stops with a clear
message on a NaN/inf loss or gradient norm (the last good checkpoint stays), checkpoints every
`train.checkpoint_every` steps, at the end and on SIGTERM (preemption), and exports the task
net alone (workdir/export) when training is complete. A latest checkpoint that does not restore
(damaged files) is named and set aside, and the run resumes from the newest one that does
(`resume`).
"""

import dataclasses
import math
import os
import signal
import time
from typing import Callable, Sequence

import jax
import numpy as np
from absl import logging

from flax import serialization

from gio_ada_jax.train import (checkpoint, run_config, state as state_lib, summaries,
                               step as train_step)
from gio_ada_jax import config_checks, cyclegan, models, variants
from gio_ada_jax.eval import pictures
from gio_ada_jax.interop import convert
from gio_ada_jax import workdir as workdir_lib
from gio_ada_jax.train import workdir_lock
from gio_ada_jax.distributed import prefetch_to_devices, replicate, unreplicate
from gio_ada_jax.data import pipeline


# train.py's exit status when SIGTERM (preemption) stopped a run after its checkpoint: not 0, so
# that `train.py ... && evaluate.py ...` never evaluates a half-trained run. 75 is EX_TEMPFAIL
# ("try again"): rerunning the same command resumes.
PREEMPTED_EXIT_CODE = 75


class NonFiniteError(FloatingPointError):
  """A loss or gradient norm became NaN or inf."""


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


def format_progress(step: int, num_steps: int, metrics: dict[str, float], steps_per_s: float,
                    images_per_s: float) -> str:
  """One console line: step, losses, speed and time left."""
  eta_s = (num_steps - step) / steps_per_s if steps_per_s > 0 else float("inf")
  eta = time.strftime("%H:%M:%S", time.gmtime(eta_s)) if math.isfinite(eta_s) else "?"
  losses = " ".join(f"{k[5:]}={v:.4f}" for k, v in sorted(metrics.items())
                    if k.startswith("loss_"))
  return (f"step {step}/{num_steps} {losses} | {steps_per_s:.2f} steps/s "
          f"{images_per_s:.1f} img/s | ETA {eta}")


def with_pretrained_encoder(state: state_lib.GioAdaState, vgg16_path: str,
                            optimizers) -> state_lib.GioAdaState:
  """The state with torchvision's ImageNet VGG16 convs in the task net's encoder (strict)."""
  params = dict(state.params)
  try:
    params["task_net"] = convert.torch_to_flax(convert.load_torch_checkpoint(vgg16_path),
                                               "vgg16", template=state.params["task_net"])
  except convert.LayoutMismatch as e:
    raise config_checks.ConfigError(str(e.explained(
        f"model.task_net.vgg16_weights ({vgg16_path})",
        f"It must be torchvision's ImageNet VGG16 file ({config_checks.VGG16_FILE}, "
        f"{config_checks.VGG16_URL}); to train from random initialisation on purpose, pass "
        "--config.model.task_net.encoder_init=random."))) from None
  except convert.ConversionError as e:
    raise config_checks.ConfigError(f"model.task_net.vgg16_weights: {e}") from None
  return state_lib.state_from_params(params, optimizers, state.rng)


def training_steps(train_config, num_source_examples: int, global_batch: int) -> int:
  """train.num_steps, or train.num_epochs of the source split at `global_batch` images a step
  (the last step of an epoch that does not fill a batch is rounded up)."""
  if train_config.num_steps > 0:
    return int(train_config.num_steps)
  return math.ceil(train_config.num_epochs * num_source_examples / global_batch)


def with_training_length(config):
  """A copy of `config` whose train.num_steps holds the run's steps (num_epochs resolved); says
  the length, the global batch and what differs from the paper's 1 + 1, 10 epochs."""
  data, train = config.data, config.train
  num_devices = jax.device_count()
  per_device = pipeline.per_device_batch(data.global_batch, num_devices)
  source, _ = pipeline.open_source_split(data, "train")
  steps = training_steps(train, len(source), data.global_batch)
  length = (f"{train.num_epochs:g} epochs of the {len(source)} images of {data.source}'s "
            "prepared train split" if train.num_epochs > 0 else "train.num_steps")
  if jax.process_index() == 0:
    print(f"Training for {steps} steps ({length}), global batch {data.global_batch} source + "
          f"{data.global_batch} target images ({per_device} of each per device on "
          f"{num_devices} device{'s' if num_devices > 1 else ''}). The paper: 10 epochs of "
          f"1 + 1 at Adam 2e-4; here the learning rate is {train.learning_rate:g} and does not "
          "scale with the batch.",
          flush=True)
  config = config.copy_and_resolve_references()
  config.train.num_epochs, config.train.num_steps = 0.0, steps
  return config


def export_task_net(params, model_config, directory: str) -> str:
  """Write G_task's params (msgpack) and the model config (JSON) for evaluation; the path.

  Written to a temporary name and renamed, so an interrupted export is never read as whole.
  """
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, workdir_lib.EXPORTED_PARAMS)
  with open(path + ".tmp", "wb") as f:
    f.write(serialization.to_bytes(jax.device_get(params)))
  os.replace(path + ".tmp", path)
  with open(os.path.join(directory, workdir_lib.EXPORTED_MODEL_CONFIG), "w") as f:
    f.write(model_config.to_json_best_effort(indent=2))
  return path


class _PreemptionFlag:
  """Set by SIGTERM: the loop then checkpoints and returns."""

  def __init__(self):
    self.raised = False
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    self.raised = True

  def restore(self):
    signal.signal(signal.SIGTERM, self._previous)


@dataclasses.dataclass(frozen=True)
class Loop:
  """What the training loop needs to know about one kind of training (GIO-Ada, CycleGAN)."""

  p_step: Callable  # (replicated state, device batch) -> (state, metrics)
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


def resume(checkpointer: checkpoint.Checkpointer, template, workdir: str
           ) -> checkpoint.Restored | None:
  """The newest checkpoint that restores, or None without any. Says (process 0) which newer
  ones were skipped, why and where they were set aside (kept, out of the way of the resumed
  run, which writes their steps again), and the step it resumes from. Raises
  checkpoint.UnrestorableCheckpoint if there are checkpoints but none restores."""
  restored, skipped = checkpointer.restore_newest(template)
  moved = checkpointer.set_aside([s.step for s in skipped])
  if jax.process_index() == 0:
    for s in skipped:
      print(checkpoint.skipped_message(s, f"moved it to {moved[s.step]} (kept, not deleted)"),
            flush=True)
    if restored is not None:
      unverified = "" if restored.verified else (
          " (written without checksums by an older version: its values are not verified)")
      print(f"Resumed from step {restored.step} in {workdir}{unverified}.", flush=True)
  return restored


def run_loop(loop: Loop, state, batches, workdir: str, config):
  """Resume from `workdir`'s newest good checkpoint or start from `state`, then step until
  `loop.num_steps`, logging, checkpointing and stopping as the module docstring says; the
  final (unreplicated) state."""
  data = config.data
  train = config.train
  checkpointer = checkpoint.Checkpointer(workdir_lib.checkpoints(workdir),
                                         train.keep_checkpoints)
  restored = resume(checkpointer, state, workdir)
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
  if loop.after_restore is not None and jax.process_index() == 0:
    loop.after_restore(None if restored is None else restored.step)

  writer = summaries.open_writer(workdir_lib.tensorboard(workdir))
  preemption = _PreemptionFlag()
  replicated = replicate(state)
  images_per_step = 2 * data.global_batch  # source + target
  last_time, last_step = time.perf_counter(), start
  device_batches = prefetch_to_devices(batches, data.device_prefetch, loop.to_step_batch)
  for step in range(start + 1, loop.num_steps + 1):
    batch, data_state = next(device_batches)
    # Everything the step reads is already on the devices: an implicit copy here would be a
    # bug (a host value creeping into the step), so it raises instead of costing time.
    with jax.transfer_guard("disallow"):
      replicated, metrics = loop.p_step(replicated, batch)
    preempted = preemption.raised  # read once: a signal arriving later waits for next step
    save_now = step % train.checkpoint_every == 0 or step == loop.num_steps or preempted
    # Metrics are checked at every log line and before every save, so no checkpoint holds a
    # state that came out of a NaN/inf step.
    if step % train.log_every == 0 or save_now:
      metrics = {k: float(v) for k, v in unreplicate(metrics).items()}
      check_finite(metrics, step, checkpointer.latest_step())
    if step % train.log_every == 0 or step == loop.num_steps:
      now = time.perf_counter()
      steps_per_s = (step - last_step) / max(now - last_time, 1e-9)
      last_time, last_step = now, step
      if jax.process_index() == 0:
        print(format_progress(step, loop.num_steps, metrics, steps_per_s,
                              steps_per_s * images_per_step), flush=True)
      summaries.write_scalars(writer, step, metrics, loop.learning_rate_at(step))
    if writer is not None and loop.pictures is not None and step % train.image_every == 0:
      first_device = jax.tree.map(lambda x: np.asarray(x.addressable_data(0))[0], batch)
      summaries.write_pictures(writer, step, loop.pictures(unreplicate(replicated).params,
                                                           first_device))
    if save_now:
      checkpointer.save(step, unreplicate(replicated), data_state)
    if preempted:
      logging.warning("SIGTERM: checkpointed step %d in %s; rerun to resume.", step, workdir)
      break
  preemption.restore()
  if writer is not None:
    writer.close()
  checkpointer.wait()
  checkpointer.close()
  return unreplicate(replicated)


def train_and_evaluate(config, workdir: str, allow_config_change: Sequence[str] = ()
                       ) -> state_lib.GioAdaState | None:
  """Train GIO-Ada as configured, writing checkpoints to `workdir`; the final state, or None
  when SIGTERM stopped the run before its last step (its checkpoint is saved; rerun to resume).

  The config is recorded in WORKDIR/config.json; resuming with one that computes differently
  raises a ConfigError naming the fields, unless `allow_config_change` names them
  (run_config.check_resume; the record is written once the run has restored its checkpoint).

  For input level "cg" a CycleGAN is trained first (WORKDIR/cyclegan) and translates the
  source set (WORKDIR/cyclegan/translated); the task net then trains on that copy.
  The run holds WORKDIR/train.lock throughout (workdir_lock.WorkdirLockError if another run
  does).
  """
  config_checks.check_config(config)  # before anything is read or compiled
  vgg16_path = config_checks.vgg16_weights_path(config.model.task_net)
  with workdir_lock.hold(workdir):  # before anything is written: one run per workdir
    return _train_and_evaluate(config, workdir, vgg16_path, allow_config_change)


def _train_and_evaluate(config, workdir: str, vgg16_path: str | None,
                        allow_config_change: Sequence[str]) -> state_lib.GioAdaState | None:
  variant = variants.from_config(config)
  changes = run_config.check_resume(config, workdir, allow_config_change)
  as_given = config  # recorded as the user gave it (the training length in epochs, ...)
  if variant.trains_cyclegan:
    from gio_ada_jax import translate  # pylint: disable=g-import-not-at-top  (TensorFlow)
    config = translate.with_cyclegan_source(config, workdir, allow_config_change)
    if config is None:
      return None
  config = with_training_length(config)
  built = models.build_models(config.model, variant)
  train = config.train
  batches = pipeline.train_iterator(config)
  state = state_lib.create_state(built, variant, config, jax.random.key(config.seed),
                                 config.data.height, config.data.width)
  optimizers = state_lib.make_optimizers(train)
  on_fresh_start = None
  if vgg16_path is not None:
    on_fresh_start = lambda state: with_pretrained_encoder(  # noqa: E731
        state, vgg16_path, optimizers)
  loop = Loop(
      p_step=train_step.make_p_train_step(built, optimizers, train, variant),
      to_step_batch=train_step.batch_from_pipeline, num_steps=train.num_steps,
      learning_rate_at=lambda step: state_lib.learning_rate_at(train, step),
      pictures=lambda params, batch: summaries.pictures(
          params, batch, built, variant, config.model.num_classes),
      on_fresh_start=on_fresh_start,
      after_restore=lambda step: run_config.record(as_given, workdir, changes, step))
  final = run_loop(loop, state, batches, workdir, config)
  if int(final.step) < train.num_steps:
    return None  # SIGTERM: checkpointed, not finished
  if jax.process_index() == 0:
    export_task_net(final.params["task_net"], config.model, workdir_lib.export(workdir))
  return final


def train_cyclegan(config, workdir: str, allow_config_change: Sequence[str] = ()
                   ) -> cyclegan.CycleGanState:
  """Train the 'cg' CycleGAN (config.cyclegan) on the source and target training images,
  writing checkpoints to `workdir` (resumed like GIO-Ada's, its config recorded and compared
  as train_and_evaluate's); the final state."""
  changes = run_config.check_resume(config, workdir, allow_config_change)
  built = cyclegan.build_models(config)
  batches = pipeline.train_iterator(config)
  state = cyclegan.create_state(built, config, jax.random.key(config.seed), config.data.height,
                                config.data.width)
  loop = Loop(
      p_step=cyclegan.make_p_train_step(built, cyclegan.make_optimizers(config),
                                        config.cyclegan),
      to_step_batch=cyclegan.batch_from_pipeline, num_steps=config.cyclegan.num_steps,
      learning_rate_at=lambda step: cyclegan.learning_rate_at(config.cyclegan, step),
      pictures=lambda params, batch: cyclegan_pictures(built, params, batch),
      after_restore=lambda step: run_config.record(config, workdir, changes, step),
      length_field="cyclegan.num_steps")
  return run_loop(loop, state, batches, workdir, config)


def cyclegan_pictures(built: cyclegan.CycleGanModels, params, batch) -> dict[str, np.ndarray]:
  """Source, source -> target, target, target -> source (uint8) for TensorBoard."""
  to_target = cyclegan.translate(built.generator, params["g_st"], batch["source_image"])
  to_source = cyclegan.translate(built.generator, params["g_ts"], batch["target_image"])
  return {"source": pictures.image_to_uint8(batch["source_image"]),
          "source_translated": pictures.image_to_uint8(np.asarray(to_target)),
          "target": pictures.image_to_uint8(batch["target_image"]),
          "target_translated": pictures.image_to_uint8(np.asarray(to_source))}
