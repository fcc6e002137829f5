"""train_and_evaluate(config, workdir): GIO-Ada's training run. For the 'cg' variant the CycleGAN
stage (cyclegan/stage.py) runs first and the task net trains on its translated source; then the
GIO-Ada step (train/step.py), compiled for train.parallelism's device layout (parallel.py),
runs in the shared loop (train/loop.py), and the task net
alone is exported (workdir/export) when training is complete. With eval.every_steps > 0 the loop
evaluates the task net on the target's evaluation split every that many steps and at the last
one, writing what evaluate.py writes for that step into workdir/eval (eval/evaluate.py).
"""

import math
import os
from typing import Sequence

import jax
from flax import serialization

from gio_ada_jax import config_checks, models, parallel, variants
from gio_ada_jax import workdir as workdir_lib
from gio_ada_jax.cyclegan import stage as cyclegan_stage
from gio_ada_jax.data import pipeline
from gio_ada_jax.distributed import is_main_process
from gio_ada_jax.eval import evaluate
from gio_ada_jax.files import atomic_write
from gio_ada_jax.interop import convert
from gio_ada_jax.train import guard, state as state_lib, summaries
from gio_ada_jax.train import step as train_step
from gio_ada_jax.train.loop import Loop, run_loop


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
  return state_lib.state_from_params(params, optimizers)


def training_steps(train_config, num_source_examples: int, global_batch: int) -> int:
  """train.num_steps, or train.num_epochs of the source split at `global_batch` images a step
  (the last step of an epoch that does not fill a batch is rounded up)."""
  if train_config.num_steps > 0:
    return int(train_config.num_steps)
  return math.ceil(train_config.num_epochs * num_source_examples / global_batch)


def _batch_split(layout: parallel.Layout, per_row: int) -> str:
  """How the global batch lies on the devices, for the start line."""
  if isinstance(layout, parallel.MeshLayout):
    data, spatial = layout.rows, layout.spatial
    return (f"{per_row} of each per row of a {data} x {spatial} (data x spatial) device mesh"
            + (f", each image's height split over {spatial} devices" if spatial > 1 else ""))
  return f"{per_row} of each per device on {layout.rows} device{'s' if layout.rows > 1 else ''}"


def with_training_length(config, layout: parallel.Layout | None = None):
  """A copy of `config` whose train.num_steps holds the run's steps (num_epochs resolved); says
  the length, the global batch (over `layout`, default pmap) and what differs from the paper's
  1 + 1, 10 epochs."""
  data, train = config.data, config.train
  layout = parallel.PmapLayout() if layout is None else layout
  per_row = pipeline.per_device_batch(data.global_batch, layout.rows)
  source, _ = pipeline.open_source_split(data, "train")
  steps = training_steps(train, len(source), data.global_batch)
  length = (f"{train.num_epochs:g} epochs of the {len(source)} images of {data.source}'s "
            "prepared train split" if train.num_epochs > 0 else "train.num_steps")
  if is_main_process():
    print(f"Training for {steps} steps ({length}), global batch {data.global_batch} source + "
          f"{data.global_batch} target images ({_batch_split(layout, per_row)}). The paper: "
          "10 epochs of "
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
  path = os.path.join(directory, workdir_lib.EXPORTED_PARAMS)
  atomic_write(path, serialization.to_bytes(jax.device_get(params)))
  atomic_write(os.path.join(directory, workdir_lib.EXPORTED_MODEL_CONFIG),
               model_config.to_json_best_effort(indent=2))
  return path


def train_and_evaluate(config, workdir: str, allow_config_change: Sequence[str] = ()
                       ) -> state_lib.GioAdaState | None:
  """Train GIO-Ada as configured, writing checkpoints to `workdir`; the final state, or None
  when SIGTERM stopped the run before its last step (its checkpoint is saved; rerun to resume).

  The config is checked, WORKDIR held and compared with the run recorded there first
  (train/guard.py): resuming with a config that computes differently raises a ConfigError
  naming the fields, unless `allow_config_change` names them.

  For input level "cg" a CycleGAN is trained first (WORKDIR/cyclegan) and translates the
  source set (WORKDIR/cyclegan/translated); the task net then trains on that copy.
  With eval.every_steps > 0, G_task is evaluated on the target's evaluation split every that
  many steps and at the last step, with that step's parameters in memory: the report, curve and
  TensorBoard scalars evaluate.py writes for it go into WORKDIR/eval (the report's checkpoint
  is "checkpoints/N" when step N's checkpoint is saved, else "in memory at training step N").
  A resumed run evaluates from the next multiple on; a step SIGTERM stopped at is not
  evaluated.
  """
  with guard.guarded_run(config, workdir, allow_config_change) as run:
    return _train_and_evaluate(config, workdir, run)


def _train_and_evaluate(config, workdir: str, run: guard.GuardedRun
                        ) -> state_lib.GioAdaState | None:
  """The method's steps, on a guarded run."""
  variant = variants.from_config(config)
  built = models.build_models(config.model, variant)
  models.check_input_size(config.model, variant, config.data.height, config.data.width,
                          config.cyclegan.n_layers)
  # Set up before anything trains, the 'cg' stage included, so that a missing evaluation split
  # stops the run at once. It reads no field that stage changes (data.source_data_dir).
  evaluate_step = (evaluate.training_evaluator(config, workdir, built.task_net)
                   if config.eval.every_steps else None)
  layout = parallel.layout_from_config(config.train)
  parallel.check_fits(layout, config.data.height, config.data.global_batch)
  if variant.trains_cyclegan:
    config = cyclegan_stage.with_cyclegan_source(config, workdir, run.allowed)
    if config is None:
      return None
  config = with_training_length(config, layout)
  train = config.train
  batches = pipeline.train_iterator(config, local_devices=layout.local_rows)
  state = state_lib.create_state(built, variant, config, jax.random.key(config.seed),
                                 config.data.height, config.data.width)
  optimizers = state_lib.make_optimizers(train)
  on_fresh_start = None
  if run.vgg16_path is not None:
    on_fresh_start = lambda state: with_pretrained_encoder(  # noqa: E731
        state, run.vgg16_path, optimizers)
  loop = Loop(
      p_step=train_step.make_p_train_step(built, optimizers, train, variant, layout),
      to_step_batch=train_step.batch_from_pipeline, num_steps=train.num_steps,
      learning_rate_at=lambda step: state_lib.learning_rate_at(train, step),
      pictures=lambda params, batch: summaries.pictures(
          params, batch, built, variant, config.model.num_classes),
      on_fresh_start=on_fresh_start,
      after_restore=run.record,
      evaluate=evaluate_step, evaluate_every=config.eval.every_steps, layout=layout)
  final = run_loop(loop, state, batches, workdir, config)
  if int(final.step) < train.num_steps:
    return None  # SIGTERM: checkpointed, not finished
  if is_main_process():
    export_task_net(final.params["task_net"], config.model, workdir_lib.export(workdir))
  return final
