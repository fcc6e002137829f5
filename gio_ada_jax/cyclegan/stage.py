"""The 'cg' variant's CycleGAN stage: train the CycleGAN (cyclegan/trainer.py), translate the
source set with its g_st (cyclegan/translate.py) and point the run's source at the copy. GIO-Ada's
trainer (trainer.py) calls with_cyclegan_source before it trains the task net."""

import pathlib
from typing import Sequence

import jax
from jax.experimental import multihost_utils

from gio_ada_jax import workdir as workdir_lib
from gio_ada_jax.errors import ConfigError
from gio_ada_jax.cyclegan import trainer as cyclegan_trainer
from gio_ada_jax.cyclegan import translate
from gio_ada_jax.data import pipeline
from gio_ada_jax.distributed import is_main_process
from gio_ada_jax.train import checkpoint


def with_cyclegan_source(config, workdir: str, allow_config_change: Sequence[str] = ()):
  """The 'cg' variant's first two stages; `config` reading the translated source, or None
  when the CycleGAN stage was preempted (rerun to resume).

  Trains the CycleGAN into WORKDIR/cyclegan (resuming; a finished one is not retrained unless
  its final checkpoint is damaged) and translates data.source with its final g_st into
  WORKDIR/cyclegan/translated (once per g_st content: a copy by other parameters or without a
  recorded digest is replaced; process 0 writes, the others wait). The task net then trains
  on that copy as in 'na'.
  """
  cyclegan_dir = translate.cyclegan_workdir(workdir)
  num_steps = config.cyclegan.num_steps
  checkpointer = checkpoint.Checkpointer(workdir_lib.checkpoints(cyclegan_dir), None)
  finished = checkpointer.latest_step() == num_steps
  checkpointer.close()
  if not finished:
    if config.train.parallelism != "pmap":
      _check_pmap_batch(config.data.global_batch)
    if is_main_process():
      under = ("" if config.train.parallelism == "pmap" else
               " under pmap (train.parallelism applies to the GIO-Ada step; the CycleGAN's "
               "activations must fit one device)")
      print(f"'cg': training the CycleGAN ({num_steps} steps) in {cyclegan_dir}{under}.",
            flush=True)
    final = cyclegan_trainer.train_cyclegan(config, cyclegan_dir, allow_config_change)
    if int(final.step) != num_steps:
      return None
  output_dir = translate.translated_data_dir(workdir)
  output = pipeline.dataset_dir(output_dir, config.data.source)
  # Every process restores (orbax's manager synchronises the processes): the digest of g_st
  # tells whether the copy is this generator's. One process writes.
  try:
    params, provenance = translate.generator_from_checkpoint(config, cyclegan_dir, num_steps,
                                                             allow_config_change)
  except checkpoint.UnrestorableCheckpoint:
    # The final checkpoint is damaged: resuming sets it aside and trains its steps again.
    if is_main_process():
      print(f"'cg': the CycleGAN's final checkpoint (step {num_steps}) does not restore; "
            "training its last steps again.", flush=True)
    final = cyclegan_trainer.train_cyclegan(config, cyclegan_dir, allow_config_change)
    if int(final.step) != num_steps:
      return None
    params, provenance = translate.generator_from_checkpoint(config, cyclegan_dir, num_steps,
                                                             allow_config_change)
  # Every process decides on the same folder state: none has started writing yet.
  multihost_utils.sync_global_devices("gio_ada_jax: cg translated source checked")
  done = output.exists() and translate.same_generator(translate.stored_provenance(output),
                                                      provenance)
  if not done:
    if is_main_process():
      path = _translate_for_cg(config, params, output_dir, provenance)
      print(f"'cg': translated {config.data.source} into {path}.", flush=True)
  multihost_utils.sync_global_devices("gio_ada_jax: cg translated source written")
  config = config.copy_and_resolve_references()
  config.data.source_data_dir = output_dir
  return config


def _check_pmap_batch(global_batch: int) -> None:
  """A ConfigError unless pmap, which the CycleGAN stage trains under whatever
  train.parallelism, splits data.global_batch over every device (a mesh may take fewer rows)."""
  try:
    pipeline.per_device_batch(global_batch, jax.device_count())
  except ConfigError as e:
    raise ConfigError(
        "the 'cg' variant's CycleGAN stage trains under pmap, one slice of the batch per "
        f"device, whatever train.parallelism ('mesh' here): {e}") from None


def _translate_for_cg(config, params, output_dir: str, provenance: dict) -> str:
  """translate_source into a 'cg' run's own folder; a taken folder says what train.py's user
  can do about it."""
  try:
    return translate.translate_source(config, params, output_dir, provenance, overwrite=True)
  except translate.OutputFolderTaken as e:
    source_root = pathlib.Path(pipeline.source_data_dir(config.data)).expanduser().resolve()
    if source_root == pathlib.Path(output_dir).expanduser().resolve():
      remedy = ("data.source_data_dir names that folder: unset it (a 'cg' run translates "
                "data.source itself).")
    else:
      remedy = "move what is there elsewhere, or train in another --workdir."
    raise translate.TranslationError(
        f"{e} A 'cg' run writes its translated source into {output_dir}; " + remedy) from None
