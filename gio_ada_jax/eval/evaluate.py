"""evaluate(config, workdir, ...): what `python evaluate.py` does, as a library call.

Restores G_task from the workdir's checkpoints (one step, the newest that restores, or every
kept one that restores; damaged ones are named and left in place), from its export, or from a
PyTorch checkpoint; evaluates it on the target's evaluation split (`metrics.py`); writes
reports (Markdown + JSON), the curve (JSON + TensorBoard) and pictures into workdir/eval.
The training loop evaluates through the same path (`training_evaluator`, eval.every_steps).
Also: inference on a folder of unlabelled images, and the comparison of several workdirs'
reports.
"""

import dataclasses
import json
import os
import pathlib
import re
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import serialization

from gio_ada_jax import files, models, parallel, variants, workdir as workdir_lib
from gio_ada_jax.data import pipeline
from gio_ada_jax.data.labels import LabelSpace, label_space_for
from gio_ada_jax.distributed import is_main_process
from gio_ada_jax.errors import InputError, MissingInput
from gio_ada_jax.eval import metrics, reports
from gio_ada_jax.images import (colourise, depth_colours, display_scale, panel,
                                 prediction_pictures, read_rgb, resize_image,
                                 write_prediction_pictures)
from gio_ada_jax.interop import convert
from gio_ada_jax.models.layers import align_corners_matrix
from gio_ada_jax.train import checkpoint, run_config, state as state_lib, summaries

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".pbm", ".pnm", ".tif", ".tiff",
                  ".webp")
TORCH_LAYOUTS = ("task_net", "deeplab_vgg")  # GIO-Ada's torch_ref net, AdaptSegNet's DeeplabVGG


@dataclasses.dataclass(frozen=True)
class TaskNetWeights:
  """Parameters of G_task and where they came from."""

  params: Any
  # for reports: "checkpoints/6", "export/task_net.msgpack", a .pth path, "in memory at
  # training step 6"
  checkpoint: str
  step: int | None  # the training step, for checkpoints
  # "checkpoint", "training" (in-memory parameters of a training step), "export" or
  # "torch_NAME": names the report file (reports.report_stem)
  source: str


def variant_name(config) -> str:
  """The config's variant, as in `--config file.py:INPUT,OUTPUT`."""
  return str(variants.from_config(config))


def _abstract_state(built: models.GioAdaModels, config):
  return checkpoint.abstract_state(lambda: state_lib.create_state(
      built, variants.from_config(config), config, jax.random.key(config.seed),
      config.data.height, config.data.width))


def _say(message: str) -> None:
  if is_main_process():
    print(message, flush=True)


def _say_skipped(skipped: list[checkpoint.Skipped]) -> None:
  for s in skipped:
    _say(checkpoint.skipped_message(s, "left in place"))


def _open_checkpoints(workdir: str) -> checkpoint.Checkpointer | None:
  """The workdir's checkpoints, or None without a checkpoints folder (not created by looking)."""
  directory = workdir_lib.checkpoints(workdir)
  return checkpoint.Checkpointer(directory, keep=None) if os.path.isdir(directory) else None


def _newest_restorable(checkpointer: checkpoint.Checkpointer, abstract, export: str = ""
                       ) -> checkpoint.Restored:
  """The newest checkpoint that restores, saying which newer ones were skipped; an error
  naming every failure (and the `export`, if it exists) when none does."""
  restored, skipped = checkpointer.newest_params(abstract)
  if restored is None:
    raise checkpoint.UnrestorableCheckpoint(
        checkpoint.none_restores(checkpointer.directory, skipped)
        + (f" The export {export} is not used instead, as it may be older than these "
           f"checkpoints; to evaluate it, move {checkpointer.directory} aside."
           if export and os.path.exists(export) else ""))
  _say_skipped(skipped)
  return restored


def _requested_step(checkpointer: checkpoint.Checkpointer, abstract, step: int
                    ) -> checkpoint.Restored:
  """Checkpoint `step`; an error naming its folder and why, and the newest other kept step
  that restores, when it does not."""
  kept = checkpointer.all_steps()
  if step not in kept:
    raise MissingInput(f"{checkpointer.directory}: no checkpoint of step {step}; kept "
                       f"steps: {kept}.")
  restored, skipped = checkpointer.newest_params(abstract, [step])
  if restored is not None:
    return restored
  if not os.path.isdir(checkpointer.folder(step)):
    raise MissingInput(f"--step {step}: {checkpointer.deleted_while_read(step)}. Evaluate a step "
                       "it keeps, or evaluate once the run has finished.")
  bad = skipped[0]
  others = [k for k in kept if k != step]
  other, _ = checkpointer.newest_params(abstract, others)
  raise checkpoint.UnrestorableCheckpoint(
      f"--step {step}: {bad.folder} cannot be restored ({bad.reason}). "
      + (f"The newest kept step that restores is {other.step} (--step {other.step}; kept: "
         f"{kept})." if other is not None else
         f"No other kept step restores either (kept: {kept}); when every step fails alike, "
         "the config may not be the one the run was trained with."))


def checkpoint_weights(built: models.GioAdaModels, config, workdir: str, *,
                       step: int | None = None, all_steps: bool = False,
                       allow_config_change: Sequence[str] = ()) -> Iterator[TaskNetWeights]:
  """G_task of the workdir's checkpoint `step`, or of every kept one that restores, or by
  default of the newest one that restores; newer ones that do not are named with the reason
  and left in place. Without any complete checkpoint, the export of a finished run (saying
  so). A `step` that does not restore is an error naming its folder, why, and the newest
  kept step that does. `config` must compute as the run's recorded config
  (run_config.check_matches), except the fields `allow_config_change` names."""
  run_config.check_matches(config, workdir, "evaluate", allow_config_change)
  checkpointer = _open_checkpoints(workdir)
  try:
    kept = checkpointer.all_steps() if checkpointer is not None else []
    if not kept:
      yield _export_without_checkpoints(built, config, workdir, step, all_steps,
                                        allow_config_change)
      return
    abstract = _abstract_state(built, config)
    if all_steps:
      skipped = []
      for s in kept:
        one, bad = checkpointer.newest_params(abstract, [s])
        _say_skipped(bad)
        skipped += bad
        if one is not None:
          yield _task_net_weights(one)
      if len(skipped) == len(kept):
        raise checkpoint.UnrestorableCheckpoint(
            checkpoint.none_restores(checkpointer.directory, skipped))
    elif step is not None:
      yield _task_net_weights(_requested_step(checkpointer, abstract, step))
    else:
      export = os.path.join(workdir_lib.export(workdir), workdir_lib.EXPORTED_PARAMS)
      yield _task_net_weights(_newest_restorable(checkpointer, abstract, export))
  finally:
    if checkpointer is not None:
      checkpointer.close()


def _task_net_weights(restored: checkpoint.Restored) -> TaskNetWeights:
  return TaskNetWeights(restored.state.params["task_net"], f"checkpoints/{restored.step}",
                        restored.step, "checkpoint")


def _export_without_checkpoints(built: models.GioAdaModels, config, workdir: str,
                                step: int | None, all_steps: bool,
                                allow_config_change: Sequence[str]) -> TaskNetWeights:
  """The export, for a workdir without any complete checkpoint (saying so when a checkpoints
  folder exists); an error if a step or every step was asked for."""
  directory = workdir_lib.checkpoints(workdir)
  export = os.path.join(workdir_lib.export(workdir), workdir_lib.EXPORTED_PARAMS)
  if step is not None or all_steps:
    where = ("no complete checkpoint in " if os.path.isdir(directory)
             else "no checkpoints folder ") + directory
    raise MissingInput(
        f"{workdir}: {where}, so {'--step' if step is not None else '--all_steps'} has no "
        f"checkpoint to read" + (f"; its export {export} is evaluated without --step and "
                                 "--all_steps." if os.path.exists(export) else "."))
  weights = export_weights(built, config, workdir, allow_config_change)
  if os.path.isdir(directory):
    _say(f"{directory} holds no complete checkpoint; using the export {export}.")
  return weights


def checkpoint_params(built: models.GioAdaModels, config, workdir: str,
                      step: int | None = None) -> dict[str, Any]:
  """Every network's parameters of checkpoint `step` (default: the newest that restores,
  saying which newer ones were skipped), e.g. G_img's."""
  run_config.check_matches(config, workdir, "evaluate")
  checkpointer = _open_checkpoints(workdir)
  try:
    kept = checkpointer.all_steps() if checkpointer is not None else []
    if not kept:
      raise MissingInput(f"{workdir}: no complete checkpoint in "
                         f"{workdir_lib.checkpoints(workdir)}; train first.")
    abstract = _abstract_state(built, config)
    restored = (_requested_step(checkpointer, abstract, step) if step is not None
                else _newest_restorable(checkpointer, abstract))
    return restored.state.params
  finally:
    if checkpointer is not None:
      checkpointer.close()


def latest_weights(built: models.GioAdaModels, config, workdir: str,
                   step: int | None = None, allow_config_change: Sequence[str] = ()
                   ) -> TaskNetWeights:
  """The one TaskNetWeights of `checkpoint_weights` for `step` (default: the latest)."""
  weights = checkpoint_weights(built, config, workdir, step=step,
                               allow_config_change=allow_config_change)
  try:
    return next(weights)
  finally:
    weights.close()  # closes the checkpoint manager


def _model_config_differences(stored: dict, current: dict, prefix: str = "model") -> list[str]:
  differences = []
  for key in sorted(set(stored) | set(current)):
    a, b = stored.get(key), current.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      differences += _model_config_differences(a, b, f"{prefix}.{key}")
    elif a != b:
      differences.append(f"{prefix}.{key} (run: {a!r}, config: {b!r})")
  return differences


def export_weights(built: models.GioAdaModels, config, workdir: str,
                   allow_config_change: Sequence[str] = ()) -> TaskNetWeights:
  """G_task from the workdir's export (written when training completes); `config` must compute
  as the run's recorded config, and its model config equal the export's (except the fields
  `allow_config_change` names)."""
  run_config.check_matches(config, workdir, "evaluate", allow_config_change)
  directory = workdir_lib.export(workdir)
  path = os.path.join(directory, workdir_lib.EXPORTED_PARAMS)
  if not os.path.exists(path):
    raise MissingInput(f"{workdir}: neither checkpoints nor {path}; train first "
                       f"(python train.py --config ... --workdir {workdir}).")
  config_path = os.path.join(directory, workdir_lib.EXPORTED_MODEL_CONFIG)
  if os.path.exists(config_path):
    with open(config_path) as f:
      stored = json.load(f)
    differences = [d for d in _model_config_differences(
        stored, json.loads(config.model.to_json_best_effort()))
                   if d.split(" ")[0] not in allow_config_change]
    if differences:
      raise InputError(f"{path} was trained with another model config: "
                       f"{'; '.join(differences)}. Evaluate with the run's config.")
  template = _task_net_template(built, config)
  with open(path, "rb") as f:
    params = serialization.from_bytes(template, f.read())
  return TaskNetWeights(params, os.path.relpath(path, workdir), None, "export")


def _task_net_template(built: models.GioAdaModels, config):
  image = jnp.zeros((1, config.data.height, config.data.width, 3), jnp.float32)
  return jax.jit(built.task_net.init)(jax.random.key(0), image)["params"]


def torch_weights(built: models.GioAdaModels, config, path: str,
                  layout: str = TORCH_LAYOUTS[0]) -> TaskNetWeights:
  """G_task from a PyTorch checkpoint in `layout` (convert.py; "deeplab_vgg" has no depth head,
  which then keeps its random initialisation)."""
  if layout not in TORCH_LAYOUTS:
    raise InputError(f"--torch_layout={layout!r} is not known; choose one of {TORCH_LAYOUTS}.")
  state_dict = convert.load_torch_checkpoint(path)
  try:
    params = convert.torch_to_flax(state_dict, layout,
                                   template=_task_net_template(built, config))
  except convert.LayoutMismatch as e:
    model = config.model
    raise e.explained(
        f"--torch_checkpoint {path} (with --torch_layout={layout}, model.num_classes="
        f"{model.num_classes}, model.width={model.width}, "
        f"{len(model.task_net.aspp_dilations)} ASPP branches)",
        f"Check --torch_layout ({', '.join(TORCH_LAYOUTS)}) and the config's model fields "
        "(model.num_classes, model.width, model.task_net.aspp_dilations; e.g. "
        "--config.model.num_classes=19), or the file is not such a network.") from None
  source = "torch_" + re.sub(r"[^A-Za-z0-9_.-]", "_", pathlib.Path(path).stem)
  return TaskNetWeights(params, path, None, source)


def _depth_scales(config, split: pipeline.EvalSplit) -> metrics.DepthScales | None:
  """Metres per normalised unit of predictions (source's depth scale) and ground truth
  (target's)."""
  true_cm = pipeline.depth_scale_cm(split.info, config.data.sky_depth)
  if true_cm <= 0:
    return None
  try:
    _, source_info = pipeline.open_split(config.data.data_dir, config.data.source, "train")
  except (pipeline.DatasetNotPrepared, ValueError) as e:
    logging.warning("No depth metrics: the predictions' scale comes from the source "
                    "dataset's depth maximum, but %s", e)
    return None
  predicted_cm = pipeline.depth_scale_cm(source_info, config.data.sky_depth)
  if predicted_cm <= 0:
    return None
  return metrics.DepthScales(predicted_m=predicted_cm / 100, true_m=true_cm / 100,
                                min_m=config.eval.depth_min_m, max_m=config.eval.depth_max_m)


def _example_name(split: pipeline.EvalSplit, index: int) -> str:
  raw = split.source[index].get("id", str(index))
  raw = raw.decode() if isinstance(raw, bytes) else str(raw)
  return f"{index:05d}_" + re.sub(r"[^A-Za-z0-9_.-]", "_", raw)


@dataclasses.dataclass(frozen=True)
class SplitEvaluator:
  """The target's evaluation split and G_task's evaluator over every process's devices (pmap or
  mesh: train.parallelism), set up once per run and used for every set of parameters
  (`evaluate_weights`)."""

  config: Any
  workdir: str  # the reports go into workdir/eval
  name: str  # the reports' name
  split: pipeline.EvalSplit
  label_space: LabelSpace
  depth: metrics.DepthScales | None  # None: no depth metrics
  layout: parallel.Layout  # over every process's devices: the totals sum over all of them
  p_eval: Any  # metrics.make_split_evaluator's

  @property
  def resolution(self) -> str:
    return "label" if self.split.label_size else "input"


def split_evaluator(config, workdir: str, task_net, *, name: str = "",
                    with_depth: bool = True) -> SplitEvaluator:
  """The evaluator of `task_net` (G_task's module) on the target's evaluation split of `config`
  (opened here; the evaluation step compiles at its first use), writing reports named `name`
  (default: the variant) into workdir/eval; `with_depth` False leaves depth metrics out (for a
  network without a depth head)."""
  label_space = label_space_for(config.model.num_classes)
  split = pipeline.target_eval_split(config, config.eval.at_label_resolution)
  depth = _depth_scales(config, split) if with_depth else None
  layout = parallel.layout_from_config(config.train)
  parallel.check_fits(layout, config.data.height)
  if isinstance(layout, parallel.MeshLayout) and is_main_process():
    print(f"Evaluating over a {layout.rows} x {layout.spatial} (data x spatial) device mesh "
          "(train.parallelism='mesh').", flush=True)
  p_eval = metrics.make_split_evaluator(task_net, label_space.num_classes, depth, layout)
  return SplitEvaluator(config, workdir, name or variant_name(config), split, label_space, depth,
                        layout, p_eval)


def evaluate_weights(evaluator: SplitEvaluator, weights: TaskNetWeights, *,
                     save_predictions: int = 0, progress: bool = True) -> dict[str, Any]:
  """Evaluate one set of G_task parameters on the split; the report. Every process runs this;
  process 0 writes the report (Markdown + JSON, reports.report_stem) and up to
  `save_predictions` examples' pictures into workdir/eval and, for a training step, updates
  the curve (JSON + TensorBoard), then prints the mIoU."""
  config, split, label_space, depth = (evaluator.config, evaluator.split, evaluator.label_space,
                                       evaluator.depth)
  result = metrics.evaluate_split(
      evaluator.p_eval, weights.params,
      split.batches(config.eval.per_device_batch, local_devices=evaluator.layout.local_rows),
      num_examples=len(split), num_classes=label_space.num_classes,
      with_depth=depth is not None, layout=evaluator.layout, num_pictures=save_predictions,
      progress=progress)
  report = reports.make_report(
      name=evaluator.name, variant=variant_name(config), checkpoint=weights.checkpoint,
      step=weights.step, dataset=split.dataset, split=split.split,
      class_names=label_space.class_names, resolution=evaluator.resolution,
      metrics=metrics.summarise(result, label_space), confusion=result.confusion,
      seconds=result.seconds,
      depth_range_m=None if depth is None else (depth.min_m, depth.max_m))
  if is_main_process():
    eval_dir = workdir_lib.evaluation(evaluator.workdir)
    stem = reports.report_stem(weights.step, weights.source, evaluator.resolution)
    paths = reports.write_report(eval_dir, stem, report)
    for example in result.pictures:
      write_prediction_pictures(
          os.path.join(eval_dir, stem, "pictures"), _example_name(split, example["index"]),
          prediction_pictures(example, label_space.palette()))
    if weights.step is not None:  # the curve over training steps, updated as each one is done
      reports.update_curve(eval_dir, report)
      _write_tensorboard(evaluator.workdir, report)
    print(f"{report['name']} ({weights.checkpoint}): mIoU "
          f"{reports.percent(report['metrics']['miou'])} over "
          f"{report['metrics']['num_images']} images -> {paths[1]}", flush=True)
  return report


def evaluate(config, workdir: str, *, step: int | None = None, all_steps: bool = False,
             torch_checkpoint: str = "", torch_layout: str = TORCH_LAYOUTS[0],
             save_predictions: int = 0, name: str = "", progress: bool = True,
             allow_config_change: Sequence[str] = ()) -> list[dict[str, Any]]:
  """Evaluate G_task as `evaluate.py` does; the reports (also written into workdir/eval).

  Every process runs this (each evaluates its share of the split); process 0 writes. The
  workdir's recorded config must compute as `config` (run_config.check_matches), except the
  fields `allow_config_change` names.
  """
  if not torch_checkpoint:  # before anything is read or compiled
    run_config.check_matches(config, workdir, "evaluate", allow_config_change)
  built = models.build_models(config.model, variants.from_config(config))
  # AdaptSegNet's network has no depth head: its depth would be random.
  evaluator = split_evaluator(config, workdir, built.task_net, name=name,
                              with_depth=not (torch_checkpoint and torch_layout == "deeplab_vgg"))
  if torch_checkpoint:
    weights = iter([torch_weights(built, config, torch_checkpoint, torch_layout)])
  else:
    weights = checkpoint_weights(built, config, workdir, step=step, all_steps=all_steps,
                                 allow_config_change=allow_config_change)
  return [evaluate_weights(evaluator, w, save_predictions=save_predictions, progress=progress)
          for w in weights]


def training_evaluator(config, workdir: str, task_net) -> Callable[[int, Any, bool], None]:
  """What the training loop calls (train/loop.py, `Loop.evaluate`) to evaluate G_task at a
  step: (step, the state's unreplicated params, whether that step's checkpoint was saved).
  Writes what `evaluate.py --step N` writes for checkpoint N; the report's checkpoint is
  "checkpoints/N" when the step's checkpoint was saved, else "in memory at training step N".
  The split is opened and the evaluator built here, once per run."""
  evaluator = split_evaluator(config, workdir, task_net)

  def evaluate_step(step: int, params, checkpointed: bool) -> None:
    where = f"checkpoints/{step}" if checkpointed else f"in memory at training step {step}"
    evaluate_weights(evaluator, TaskNetWeights(params["task_net"], where, step,
                                               "checkpoint" if checkpointed else "training"))

  return evaluate_step


def _write_tensorboard(workdir: str, report: dict[str, Any]) -> None:
  """The report's curve scalars as eval/* (eval_input/* at input resolution) at its step."""
  prefix = "eval" if report["resolution"] == "label" else "eval_input"
  writer = summaries.open_writer(workdir_lib.tensorboard(workdir, "eval"))
  for key, value in reports.curve_point(report).items():
    if key != "step" and value is not None:
      writer.scalar(f"{prefix}/{key}", value, report["step"])
  writer.close()


def tables(reports_list: list[dict[str, Any]]) -> str:
  """The printed summary: the IoU table and, where there is depth, the depth table."""
  text = reports.markdown_table(reports_list)
  depth = reports.depth_table(reports_list)
  return text + ("\n\n" + depth if depth else "")


# ---------------------------------------------------------------------- unlabelled images

PICTURE_KINDS = ("segmentation", "depth", "panel")  # NAME_<kind>.png for each image NAME
# Lists what predict_images wrote into an output folder: only those files may be overwritten.
IMAGES_MANIFEST = ".predict_images.json"


@dataclasses.dataclass(frozen=True)
class ImageFolder:
  """The images of a folder (by suffix, not recursive) and what else it holds."""

  images: list[pathlib.Path]
  skipped: list[str]  # "NAME (why)" of every other entry: another suffix, a subfolder, a FIFO


def list_images(images_dir: str) -> ImageFolder:
  """The images of `images_dir`; FileNotFoundError when it is no folder or has none."""
  if not os.path.isdir(images_dir):
    raise MissingInput(f"--images_dir={images_dir}: not a folder.")
  entries = sorted(pathlib.Path(images_dir).iterdir())
  images = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
  skipped = [f"{p.name}/ (a folder: subfolders are not read)" if p.is_dir()
             else f"{p.name} (not a regular file)" if not p.is_file()
             else f"{p.name} (not an image by its suffix)" for p in entries if p not in images]
  if not images:
    raise MissingInput(f"{images_dir}: no images ({', '.join(IMAGE_SUFFIXES)}).")
  return ImageFolder(images, skipped)


def picture_names(image: pathlib.Path) -> list[str]:
  """The files predict_images writes for `image`: named after its whole file name, so that
  a.png and a.jpg never share pictures (a.png_segmentation.png, a.jpg_segmentation.png)."""
  return [f"{image.name}_{kind}.png" for kind in PICTURE_KINDS]


def check_image_folders(images_dir: str, output_dir: str) -> ImageFolder:
  """The images to predict, after refusing (ValueError) an output folder that is, is inside or
  holds the images folder, pictures whose names differ only in case, and an output folder
  holding files that predict_images did not write there (IMAGES_MANIFEST)."""
  folder = list_images(images_dir)
  images = pathlib.Path(images_dir).resolve()
  output = pathlib.Path(output_dir).expanduser().resolve()
  relation = ("is the same folder as" if output == images
              else "is inside" if images in output.parents
              else "contains" if output in images.parents else None)
  if relation:
    raise InputError(
        f"--output_dir {output} {relation} --images_dir {images}: pictures and images are kept "
        "apart, so that no picture is ever read back as an image and no image is overwritten. "
        f"Choose an output folder outside it, e.g. {images}_predictions.")
  existing = next(p for p in (output, *output.parents) if p.exists())
  if not existing.is_dir():  # the output folder, or one above it, is a file
    raise InputError(f"--output_dir {output}: {existing} is a file, not a folder; choose a new "
                     "or empty folder for the pictures.")
  by_case = {}
  for image in folder.images:
    by_case.setdefault(image.name.casefold(), []).append(image.name)
  same = [names for names in by_case.values() if len(names) > 1]
  if same:
    raise InputError(
        f"{images}: {' and '.join(same[0])} differ only in case, so their pictures would "
        "overwrite each other on a case-insensitive file system; rename one.")
  if output.is_dir():
    ours = _manifest_files(output) | {IMAGES_MANIFEST}
    foreign = sorted(p.name for p in output.iterdir() if p.name not in ours
                     and not any(files.is_temporary_of(p.name, name) for name in ours))
    if foreign:
      raise InputError(
          f"--output_dir {output} holds files that `evaluate.py --images_dir` did not write "
          f"there ({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); it never "
          "overwrites or mixes with them. Choose a new or empty folder.")
  return folder


def _manifest_files(output: pathlib.Path) -> set[str]:
  """The files an earlier predict_images wrote into `output` (none without a manifest)."""
  path = output / IMAGES_MANIFEST
  if not path.exists():
    return set()
  try:
    files = json.loads(path.read_text())["files"]
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
      raise TypeError("'files' is not a list of file names")
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise InputError(f"{path}: cannot be read as the list of pictures predict_images wrote "
                     f"({type(e).__name__}: {e}); choose a new or empty --output_dir.") from None
  return set(files)


def upsample_host(x: np.ndarray, height: int, width: int) -> np.ndarray:
  """[h, w, C] -> [height, width, C], bilinear align_corners=True (as on device)."""
  rows = align_corners_matrix(x.shape[0], height)
  cols = align_corners_matrix(x.shape[1], width)
  return np.einsum("pw,owc->opc", cols, np.einsum("oh,hwc->owc", rows, x))


def predict_images(config, weights: TaskNetWeights, images_dir: str, output_dir: str
                   ) -> ImageFolder:
  """Segmentation, depth and panel pictures of every image in `images_dir` (no labels, not
  recursive) into `output_dir` as picture_names; the images predicted and the names skipped.

  Every image is read (images.read_rgb, any PIL mode) before anything is written: one that
  cannot be read correctly raises UnreadableImage naming it. Each is resized to the configured
  input size for the network and its predictions are upsampled back to its own size. The
  folders are checked first (check_image_folders), and the pictures listed in IMAGES_MANIFEST
  before they are written.
  """
  folder = check_image_folders(images_dir, output_dir)
  for path in folder.images:  # decoded twice, so that a bad file stops the run before any write
    read_rgb(path)
  manifest = pathlib.Path(output_dir).expanduser() / IMAGES_MANIFEST
  ours = _manifest_files(manifest.parent) if manifest.parent.is_dir() else set()
  ours |= {name for path in folder.images for name in picture_names(path)}
  files.atomic_write(str(manifest), json.dumps({"files": sorted(ours)}, indent=1))
  built = models.build_models(config.model, variants.from_config(config))
  label_space = label_space_for(config.model.num_classes)
  height, width = config.data.height, config.data.width
  # The heads' stride-8 outputs, upsampled once to each image's own size (as in evaluation).
  apply = jax.jit(lambda params, image: built.task_net.apply(
      {"params": params}, image, upsample_to_input=False))
  for path in folder.images:
    rgb = read_rgb(path)
    image = pipeline.normalise_image(resize_image(rgb, height, width))
    logits, depth = jax.device_get(apply(weights.params, image[None]))
    logits = upsample_host(np.asarray(logits[0]), *rgb.shape[:2])
    depth = upsample_host(np.asarray(depth[0]), *rgb.shape[:2])[..., 0]
    segmentation = colourise(np.argmax(logits, axis=-1), label_space.palette())
    depth_rgb = depth_colours(depth, scale=display_scale(depth))
    write_prediction_pictures(str(manifest.parent), path.name, {
        "segmentation": segmentation, "depth": depth_rgb,
        "panel": panel([[rgb, segmentation, depth_rgb]])})
  return folder
