"""Translate a prepared source dataset with a CycleGAN generator into a new prepared dataset.

    python -m gio_ada_jax.cyclegan.translate --config configs/X.py --cyclegan_workdir DIR \\
        --output_dir OUT [--step N]
    python -m gio_ada_jax.cyclegan.translate --config configs/X.py \\
        --torch_generator latest_net_G_A.pth --output_dir OUT

Reads config.data.source under config.data.data_dir, translates every split with the source ->
target generator (g_st) of a CycleGAN trained by this package (its latest checkpoint, or
--step), or with upstream PyTorch CycleGAN's G_A state_dict (converted by convert.py), and
writes OUT/<data.source>/<data version> with the same ids, labels and depth. Train the task
net on it as in 'na' with --config.data.source_data_dir=OUT. `train.py` with the 'cg' variant
does all three stages itself (cyclegan/stage.py).

A translated copy records its generator by content: the sha256 of the .pth file, or of g_st's
parameters in the checkpoint (the path and step are kept for people to read). A copy is reused
only when that digest matches, so a changed file at the same path or a CycleGAN retrained to
the same step translates again; a copy recorded without a digest is never reused.
"""

import hashlib
import os
import pathlib
import shutil
import sys
from typing import Any, Callable, Sequence

import jax
import numpy as np
from absl import flags
from ml_collections import config_flags

from gio_ada_jax import cli, config_checks, files, workdir as workdir_lib
from gio_ada_jax.cyclegan import model as cyclegan
from gio_ada_jax.data import builders, pipeline, prepare
from gio_ada_jax.distributed import is_main_process
from gio_ada_jax.errors import UserError
from gio_ada_jax.images import image_to_uint8
from gio_ada_jax.interop import convert
from gio_ada_jax.train import checkpoint, run_config

CYCLEGAN_SUBDIR = "cyclegan"  # inside a 'cg' run's workdir
TRANSLATED_SUBDIR = "translated"  # inside CYCLEGAN_SUBDIR
DIGEST = "generator_sha256"  # the recorded generator's content (file_sha256 or params_sha256)
# What makes two generators the same: their content, and whether the output adds the input
# (a config setting, not a parameter). Paths and steps are recorded for people only.
IDENTITY_FIELDS = (DIGEST, "residual_output")


class TranslationError(UserError, ValueError):
  """No generator to translate with, or an output that belongs to another generator."""


class OutputFolderTaken(TranslationError):
  """The output folder holds data the translated copy may not replace; `replaceable`: what is
  there is another generator's translation, which `overwrite` replaces. The message says what
  is there; the caller adds how to choose another folder (a flag, a workdir)."""

  def __init__(self, message: str, replaceable: bool = False):
    super().__init__(message)
    self.replaceable = replaceable


def cyclegan_workdir(workdir: str) -> str:
  """Where a 'cg' run trains its CycleGAN."""
  return os.path.join(workdir, CYCLEGAN_SUBDIR)


def translated_data_dir(workdir: str) -> str:
  """Where a 'cg' run writes its translated source set (a data root)."""
  return os.path.join(cyclegan_workdir(workdir), TRANSLATED_SUBDIR)


def generator_from_checkpoint(config, workdir: str, step: int | None = None,
                              allow_config_change: Sequence[str] = ()) -> tuple[Any, dict]:
  """(g_st params, provenance) from a CycleGAN workdir's checkpoint `step` (default: the newest
  that restores, naming the newer ones skipped); `config` must build the same networks and name
  the same source as the workdir's recorded config (run_config.check_matches, except the fields
  `allow_config_change` names). checkpoint.UnrestorableCheckpoint if `step`, or every
  checkpoint, does not restore."""
  check_cyclegan_workdir(workdir)
  run_config.check_matches(config, workdir, "translate", allow_config_change)
  built = cyclegan.build_models(config)
  checkpointer = checkpoint.Checkpointer(workdir_lib.checkpoints(workdir), None)
  try:
    latest = checkpointer.latest_step() if step is None else step
    if latest is None or latest not in checkpointer.all_steps():
      raise TranslationError(
          f"{workdir_lib.checkpoints(workdir)}: no CycleGAN checkpoint"
          f"{'' if step is None else f' of step {step}'} (kept: {checkpointer.all_steps()}); "
          "train one first (train.py with the 'cg' variant) or pass --torch_generator.")
    abstract = checkpoint.abstract_state(lambda: cyclegan.create_state(
        built, config, jax.random.key(0), config.data.height, config.data.width))
    if step is not None:
      params = checkpointer.restore_params(abstract, step)["g_st"]
    else:
      restored, skipped = checkpointer.newest_params(abstract)
      if is_main_process():
        for s in skipped:
          print(checkpoint.skipped_message(s, "left in place"), flush=True)
      if restored is None:
        raise checkpoint.UnrestorableCheckpoint(
            checkpoint.none_restores(checkpointer.directory, skipped))
      step, params = restored.step, restored.state.params["g_st"]
  finally:
    checkpointer.close()
  return params, checkpoint_provenance(workdir, step, params, config.cyclegan.residual_output)


def check_cyclegan_workdir(workdir: str) -> None:
  """TranslationError when `workdir` is clearly not a CycleGAN workdir: a 'cg' run's own
  workdir (its CycleGAN is in WORKDIR/cyclegan) or, by its record, a run of another variant.
  Their checkpoints would otherwise fail to restore as a CycleGAN's, blaming the config."""
  inner = cyclegan_workdir(workdir)
  if os.path.isdir(workdir_lib.checkpoints(inner)):
    raise TranslationError(f"{workdir} is a 'cg' run's workdir; its CycleGAN trains in {inner}: "
                           f"pass --cyclegan_workdir={inner}.")
  variant = (run_config.read_record(workdir) or {}).get("variant")
  if isinstance(variant, str) and variant.split(",")[0].strip() != "cg":
    raise TranslationError(
        f"{workdir} holds a '{variant}' run, which trains no CycleGAN (its checkpoints hold "
        "GIO-Ada's networks); give the CycleGAN workdir of a 'cg' run (WORKDIR/cyclegan) or a "
        "PyTorch generator (--torch_generator).")


def checkpoint_provenance(workdir: str, step: int, params, residual_output: bool) -> dict:
  """What a translated copy records of g_st from this package's CycleGAN workdir."""
  return {"cyclegan_checkpoint": os.path.abspath(workdir), "step": int(step),
          DIGEST: params_sha256(params), "residual_output": bool(residual_output)}


def params_sha256(params) -> str:
  """sha256 of a parameter tree: every leaf's path, dtype, shape and bytes, in JAX's (sorted)
  key order, so the same values always give the same digest."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    array = np.ascontiguousarray(np.asarray(leaf))
    digest.update(f"{jax.tree_util.keystr(path)}:{array.dtype.str}:{array.shape};".encode())
    digest.update(array.tobytes())
  return digest.hexdigest()


def file_sha256(path: str) -> str:
  """sha256 of a file's bytes."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def generator_from_torch(config, path: str) -> tuple[Any, dict]:
  """(params, provenance) from an upstream PyTorch CycleGAN generator state_dict (G_A).

  config.cyclegan.ngf / num_blocks and config.model.width must describe it (a mismatch names
  the misfitting key).
  """
  if config.cyclegan.residual_output:
    raise TranslationError(
        f"{path}: upstream CycleGAN generators end in a plain tanh, but this config has "
        "cyclegan.residual_output=True; pass --config.cyclegan.residual_output=False.")
  built = cyclegan.build_models(config)
  shapes = jax.eval_shape(built.generator.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, 32, 32, 3), np.float32))["params"]
  template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  state_dict = convert.load_torch_checkpoint(path)
  try:
    params = convert.torch_to_flax(state_dict, "generator", template)
  except convert.LayoutMismatch as e:
    raise e.explained(
        f"--torch_generator {path} (with cyclegan.ngf={config.cyclegan.ngf}, "
        f"cyclegan.num_blocks={config.cyclegan.num_blocks}, model.width={config.model.width})",
        "Check the config's cyclegan.ngf, cyclegan.num_blocks and model.width (upstream "
        "CycleGAN: 64, 9 and 1.0; e.g. --config.cyclegan.num_blocks=6 for resnet_6blocks), or "
        "the file is not a CycleGAN ResnetGenerator (latest_net_G_A.pth).") from None
  return params, {"torch_generator": os.path.abspath(path), DIGEST: file_sha256(path),
                  "residual_output": False}


def same_generator(stored: dict | None, provenance: dict) -> bool:
  """Whether a copy recorded as made by `stored` was made by the generator `provenance`
  describes: the same content (a record without a digest is by an unknown generator)."""
  return (stored is not None and stored.get(DIGEST) is not None
          and all(stored.get(k) == provenance.get(k) for k in IDENTITY_FIELDS))


def describe(provenance: dict) -> str:
  """A generator record as a phrase for messages."""
  digest = provenance.get(DIGEST)
  content = f"sha256 {digest[:12]}" if digest else "no digest recorded"
  if provenance.get("residual_output"):
    content += ", residual_output"
  if "torch_generator" in provenance:
    return f"the PyTorch generator {provenance['torch_generator']} ({content})"
  if "cyclegan_checkpoint" in provenance:
    return (f"the CycleGAN {provenance['cyclegan_checkpoint']} at step "
            f"{provenance.get('step')} (g_st {content})")
  return f"{provenance} ({content})"


def image_translator(config, params) -> Callable[[np.ndarray], np.ndarray]:
  """uint8 [N, H, W, 3] -> uint8 translations by the generator with `params`."""
  generator = cyclegan.build_models(config).generator
  params = jax.device_put(params)

  def translate_images(images: np.ndarray) -> np.ndarray:
    translated = cyclegan.apply_generator(generator, params, pipeline.normalise_image(images))
    return image_to_uint8(np.asarray(translated))

  return translate_images


def check_output_root(output_data_dir: str, source_dir: str, name: str) -> None:
  """The translated copy of dataset `name` gets a data root of its own: not the source's root
  (the copy would take the source's place) and not a folder that holds other data."""
  root = pathlib.Path(output_data_dir).expanduser().resolve()
  if root == pathlib.Path(source_dir).expanduser().resolve():
    raise OutputFolderTaken(
        f"{output_data_dir} is the data root of the source itself: the translated copy of "
        f"{name} would take the place of the prepared one; it needs a folder of its own, e.g. "
        f"{root / 'translated'}.")
  if not root.is_dir():
    return
  top, _, config_name = name.partition("/")
  other = sorted(p.name for p in root.iterdir() if p.name not in (top, "downloads"))
  if config_name and (root / top).is_dir():
    other += sorted(f"{top}/{p.name}" for p in (root / top).iterdir()
                    if p.name not in (config_name, ".config"))
  if other:
    raise OutputFolderTaken(
        f"{root} holds other data ({', '.join(other[:5])}{', ...' if len(other) > 5 else ''}); "
        "translated copies go into a folder of their own.")


def translate_source(config, params, output_data_dir: str, provenance: dict,
                     overwrite: bool = False) -> str:
  """Write the translated copy of config.data.source into `output_data_dir`; its folder.

  A complete copy made by the same generator (same_generator: by content) is kept as it is;
  one made by another, or recorded without a digest, raises OutputFolderTaken (or, with
  `overwrite`, is replaced). Nothing that translate did not write is ever deleted:
  the source's own root, a folder holding other data and a prepared dataset without a
  recorded generator are refused (check_output_root). TFDS writes into a temporary folder and
  renames it when every split is done, so an interrupted translation never reads as complete;
  the folder a killed one left is removed by the next (prepare.write_dataset), and SIGTERM
  raises interrupts.Terminated after TFDS removed it.
  """
  prepare.hide_gpus_from_tensorflow()
  data = config.data
  source_dir = pipeline.source_data_dir(data)
  _, info = pipeline.open_split(source_dir, data.source, "train")
  split_stats = (info.metadata or {}).get(pipeline.METADATA_SPLIT_STATS, {})
  num_classes = len(next(iter(split_stats.values()))["class_pixels"]) - 1
  builder_class = builders.translated_builder(data.source, "depth" in info.features,
                                              num_classes)
  check_output_root(output_data_dir, source_dir, data.source)
  output = pipeline.dataset_dir(output_data_dir, data.source)
  if output.exists():
    stored = stored_provenance(output)
    if stored is None:
      raise OutputFolderTaken(
          f"{output}: holds a prepared dataset that translate did not write (no generator "
          "recorded); it is never replaced.")
    if not same_generator(stored, provenance) and not overwrite:
      raise OutputFolderTaken(f"{output}: holds a translation by {describe(stored)}, not by "
                              f"{describe(provenance)}.", replaceable=True)
    if not same_generator(stored, provenance):
      shutil.rmtree(output)
  builder = builder_class(source_data_dir=source_dir,
                          translate_images=image_translator(config, params),
                          provenance=provenance, batch_size=config.cyclegan.translate_batch,
                          data_dir=output_data_dir, file_format="array_record")
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()  # inside a training log, the summary line below is enough
  prepare.write_dataset(builder)  # removes what a killed translation left; SIGTERM cleans up
  return str(builder.data_path)


def stored_provenance(path) -> dict | None:
  """The generator a complete translated copy at `path` was made by (None: not recorded)."""
  return (pipeline.prepared_builder(path).info.metadata or {}).get(
      pipeline.METADATA_TRANSLATED_BY)


def _define_flags() -> None:
  """Command-line flags, defined only when this module runs as a program."""
  config_flags.DEFINE_config_file("config", None, "The config of the run (data, cyclegan, "
                                  "model.width).")
  flags.DEFINE_string("cyclegan_workdir", None, "A CycleGAN workdir of this package (for "
                      "'cg' runs: WORKDIR/cyclegan).")
  flags.DEFINE_integer("step", None, "Checkpoint step of --cyclegan_workdir (default: the "
                       "latest).")
  flags.DEFINE_string("torch_generator", None, "Upstream PyTorch CycleGAN generator "
                      "state_dict (latest_net_G_A.pth, A = the source domain).")
  flags.DEFINE_string("output_dir", None, "Data root of the translated copy.")
  flags.DEFINE_bool("overwrite", False, "Replace a translated copy made by another generator "
                    "(or recorded without its generator's digest).")
  flags.DEFINE_list("allow_config_change", [], run_config.ALLOW_FLAG_HELP)
  flags.mark_flags_as_required(["config", "output_dir"])


def main(argv):
  del argv
  config = flags.FLAGS.config
  fl = flags.FLAGS
  if (fl.cyclegan_workdir is None) == (fl.torch_generator is None):
    print("translate: give exactly one of --cyclegan_workdir and --torch_generator.",
          file=sys.stderr)
    return 2
  try:
    config_checks.check_config(config)
    files.check_writable_folder(fl.output_dir, f"--output_dir {fl.output_dir}")
    if fl.torch_generator:
      params, provenance = generator_from_torch(config, fl.torch_generator)
    else:
      params, provenance = generator_from_checkpoint(config, fl.cyclegan_workdir, fl.step,
                                                     fl.allow_config_change)
    path = translate_source(config, params, fl.output_dir, provenance, fl.overwrite)
  except OutputFolderTaken as e:
    remedy = ("Pass --overwrite to replace it or choose another --output_dir." if e.replaceable
              else "Choose another --output_dir (a new or empty folder).")
    print(f"translate: {e} {remedy}", file=sys.stderr)
    return 2
  except FileNotFoundError as e:
    raise UserError(str(e)) from e
  print(f"Translated {config.data.source} into {path}. Train on it with "
        f"--config.data.source_data_dir={fl.output_dir}.")
  return 0


if __name__ == "__main__":
  _define_flags()
  cli.run(main, "translate")
