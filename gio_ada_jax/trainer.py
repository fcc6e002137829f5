"""train_and_evaluate(config, workdir): the training loop around the pmapped GIO-Ada step.

Resumes from the workdir's latest checkpoint (parameters, optimiser states, step, RNG and the
data iterator), logs losses, steps/s, images/s and ETA from the first step, stops with a clear
message on a NaN/inf loss or gradient norm (the last good checkpoint stays), checkpoints every
`train.checkpoint_every` steps, at the end and on SIGTERM (preemption), and exports the task
net alone (workdir/export) when training is complete.
"""

import math
import os
import signal
import time

import jax
import numpy as np
from absl import logging

from flax import serialization

from gio_ada_jax import checkpoint, convert, models, state as state_lib, summaries, train_step
from gio_ada_jax import workdir as workdir_lib
from gio_ada_jax.distributed import prefetch_to_devices, replicate, unreplicate
from gio_ada_jax.data import pipeline


class NonFiniteError(FloatingPointError):
  """A loss or gradient norm became NaN or inf."""


def check_finite(metrics: dict[str, float], step: int) -> None:
  """Raise naming every non-finite metric of `step`."""
  bad = sorted(name for name, value in metrics.items() if not math.isfinite(value))
  if bad:
    raise NonFiniteError(f"step {step}: non-finite {', '.join(bad)} "
                         f"({', '.join(f'{n}={metrics[n]}' for n in bad)}); stopping. The "
                         "last good checkpoint is kept in the workdir; lower the learning "
                         "rate or the adversarial weights and resume.")


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
  params["task_net"] = convert.torch_to_flax(convert.load_torch_checkpoint(vgg16_path),
                                             "vgg16", template=state.params["task_net"])
  return state_lib.state_from_params(params, optimizers, state.rng)


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


def train_and_evaluate(config, workdir: str) -> state_lib.GioAdaState:
  """Train GIO-Ada as configured, writing checkpoints to `workdir`; the final state."""
  state_lib.check_variant(config)
  built = models.build_models(config.model)
  data = config.data
  train = config.train
  batches = pipeline.train_iterator(config)
  state = state_lib.create_state(built, config, jax.random.key(config.seed), data.height,
                                 data.width)
  checkpointer = checkpoint.Checkpointer(workdir_lib.checkpoints(workdir),
                                         train.keep_checkpoints)
  optimizers = state_lib.make_optimizers(train)
  restored = checkpointer.restore(state)
  if restored is not None:
    state, data_state = restored
    batches.set_state(data_state)
    if jax.process_index() == 0:
      print(f"Resumed from step {int(state.step)} in {workdir}.", flush=True)
  elif config.model.task_net.pretrained_vgg16:
    state = with_pretrained_encoder(state, config.model.task_net.pretrained_vgg16, optimizers)
  start = int(state.step)

  p_step = train_step.make_p_train_step(built, optimizers, train)
  writer = summaries.open_writer(workdir_lib.tensorboard(workdir))
  preemption = _PreemptionFlag()
  replicated = replicate(state)
  images_per_step = 2 * data.per_device_batch * jax.device_count()  # source + target
  last_time, last_step = time.perf_counter(), start
  device_batches = prefetch_to_devices(batches, data.device_prefetch,
                                       train_step.batch_from_pipeline)
  for step in range(start + 1, train.num_steps + 1):
    batch, data_state = next(device_batches)
    # Everything the step reads is already on the devices: an implicit copy here would be a
    # bug (a host value creeping into the step), so it raises instead of costing time.
    with jax.transfer_guard("disallow"):
      replicated, metrics = p_step(replicated, batch)
    preempted = preemption.raised  # read once: a signal arriving later waits for next step
    save_now = step % train.checkpoint_every == 0 or step == train.num_steps or preempted
    # Metrics are checked at every log line and before every save, so no checkpoint holds a
    # state that came out of a NaN/inf step.
    if step % train.log_every == 0 or save_now:
      metrics = {k: float(v) for k, v in unreplicate(metrics).items()}
      check_finite(metrics, step)
    if step % train.log_every == 0 or step == train.num_steps:
      now = time.perf_counter()
      steps_per_s = (step - last_step) / max(now - last_time, 1e-9)
      last_time, last_step = now, step
      if jax.process_index() == 0:
        print(format_progress(step, train.num_steps, metrics, steps_per_s,
                              steps_per_s * images_per_step), flush=True)
      summaries.write_scalars(writer, step, metrics, state_lib.learning_rate_at(train, step))
    if writer is not None and step % train.image_every == 0:
      first_device = jax.tree.map(lambda x: np.asarray(x.addressable_data(0))[0], batch)
      summaries.write_pictures(writer, step, summaries.pictures(
          unreplicate(replicated).params, first_device, built, train.input_level,
          config.model.num_classes))
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
  final = unreplicate(replicated)
  if int(final.step) == train.num_steps and jax.process_index() == 0:
    export_task_net(final.params["task_net"], config.model, workdir_lib.export(workdir))
  return final
