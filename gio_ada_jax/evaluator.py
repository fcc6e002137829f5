"""evaluate(config, workdir, ...): what `python evaluate.py` does, as a library call.

Restores G_task from the workdir's checkpoints (one step, the latest, or every kept one), from
its export, or from a PyTorch checkpoint; evaluates it on the target's evaluation split
(`evaluation.py`); writes reports (Markdown + JSON), the curve (JSON + TensorBoard) and pictures
into workdir/eval. Also: inference on a folder of unlabelled images, and the comparison of
several workdirs' reports.
"""

import dataclasses
import json
import os
import pathlib
import re
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import serialization
from PIL import Image

from gio_ada_jax import (checkpoint, convert, evaluation, models, pictures, reports,
                         state as state_lib, variants, workdir as workdir_lib)
from gio_ada_jax.data import pipeline
from gio_ada_jax.data.labels import label_space_for
from gio_ada_jax.distributed import is_main_process
from gio_ada_jax.models.layers import align_corners_matrix

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm")
TORCH_LAYOUTS = ("task_net", "deeplab_vgg")  # GIO-Ada's torch_ref net, AdaptSegNet's DeeplabVGG


@dataclasses.dataclass(frozen=True)
class TaskNetWeights:
  """Parameters of G_task and where they came from."""

  params: Any
  checkpoint: str  # for reports: "checkpoints/6", "export/task_net.msgpack", a .pth path
  step: int | None  # the training step, for checkpoints
  source: str  # "checkpoint", "export" or "torch_NAME": names the report file (reports.py)


def variant_name(config) -> str:
  """The config's variant, as in `--config file.py:INPUT,OUTPUT`."""
  return str(variants.from_config(config))


def _abstract_state(built: models.GioAdaModels, config):
  return checkpoint.abstract_state(lambda: state_lib.create_state(
      built, variants.from_config(config), config, jax.random.key(config.seed),
      config.data.height, config.data.width))


def checkpoint_weights(built: models.GioAdaModels, config, workdir: str, *,
                       step: int | None = None, all_steps: bool = False
                       ) -> Iterator[TaskNetWeights]:
  """G_task of the workdir's checkpoint `step` (default: the latest), or of every kept one;
  without checkpoints, the export of a finished run."""
  directory = workdir_lib.checkpoints(workdir)
  if not os.path.isdir(directory):  # do not let the CheckpointManager create it
    if step is not None or all_steps:
      exported = os.path.exists(os.path.join(workdir_lib.export(workdir),
                                             workdir_lib.EXPORTED_PARAMS))
      raise FileNotFoundError(
          f"{workdir}: no checkpoints folder ({directory})"
          + ("; the run has only its export, which evaluate.py evaluates without --step and "
             "--all_steps." if exported else "."))
    yield export_weights(built, config, workdir)
    return
  checkpointer = checkpoint.Checkpointer(directory, keep=None)
  try:
    kept = checkpointer.all_steps()
    if not kept:
      raise FileNotFoundError(f"{workdir}: no complete checkpoint in {directory}.")
    if all_steps:
      steps = kept
    elif step is not None:
      if step not in kept:
        raise FileNotFoundError(f"{workdir}: no checkpoint of step {step}; kept steps: {kept}.")
      steps = [step]
    else:
      steps = [kept[-1]]
    abstract = _abstract_state(built, config)
    for s in steps:
      try:
        params = checkpointer.restore_params(abstract, s)
      except Exception as e:  # orbax raises several types for a tree that does not fit
        raise ValueError(
            f"{directory}/{s}: cannot be restored with this config ({type(e).__name__}: "
            f"{str(e)[:300]}); evaluate with the config (variant and model.* fields) the run "
            "was trained with.") from e
      yield TaskNetWeights(params["task_net"], f"checkpoints/{s}", s, "checkpoint")
  finally:
    checkpointer.close()


def checkpoint_params(built: models.GioAdaModels, config, workdir: str,
                      step: int | None = None) -> dict[str, Any]:
  """Every network's parameters of checkpoint `step` (default: the latest), e.g. G_img's."""
  checkpointer = checkpoint.Checkpointer(workdir_lib.checkpoints(workdir), keep=None)
  try:
    kept = checkpointer.all_steps()
    if not kept or (step is not None and step not in kept):
      raise FileNotFoundError(f"{workdir}: no checkpoint"
                              f"{f' of step {step}' if step is not None else ''} (kept: {kept}).")
    return checkpointer.restore_params(_abstract_state(built, config),
                                       kept[-1] if step is None else step)
  finally:
    checkpointer.close()


def latest_weights(built: models.GioAdaModels, config, workdir: str,
                   step: int | None = None) -> TaskNetWeights:
  """The one TaskNetWeights of `checkpoint_weights` for `step` (default: the latest)."""
  weights = checkpoint_weights(built, config, workdir, step=step)
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


def _without_stale_variant_fields(stored: dict) -> dict:
  """An exported model config without the fields that held the variant before config.variant
  (variants.STALE_FIELDS; older exports have model.generator.use_labels / use_depth). G_task,
  the only network exported, does not depend on them."""
  for field in variants.STALE_FIELDS:
    *parents, name = field.split(".")
    if parents[0] != "model":
      continue
    node = stored
    for parent in parents[1:]:
      node = node.get(parent) if isinstance(node, dict) else None
    if isinstance(node, dict):
      node.pop(name, None)
  return stored


def export_weights(built: models.GioAdaModels, config, workdir: str) -> TaskNetWeights:
  """G_task from the workdir's export (written when training completes); its stored model
  config must equal `config.model`."""
  directory = workdir_lib.export(workdir)
  path = os.path.join(directory, workdir_lib.EXPORTED_PARAMS)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{workdir}: neither checkpoints nor {path}; train first "
                            f"(python train.py --config ... --workdir {workdir}).")
  config_path = os.path.join(directory, workdir_lib.EXPORTED_MODEL_CONFIG)
  if os.path.exists(config_path):
    with open(config_path) as f:
      stored = _without_stale_variant_fields(json.load(f))
    differences = _model_config_differences(stored, json.loads(config.model.to_json_best_effort()))
    if differences:
      raise ValueError(f"{path} was trained with another model config: "
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
    raise ValueError(f"--torch_layout={layout!r} is not known; choose one of {TORCH_LAYOUTS}.")
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


def _depth_scales(config, split: pipeline.EvalSplit) -> evaluation.DepthScales | None:
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
  return evaluation.DepthScales(predicted_m=predicted_cm / 100, true_m=true_cm / 100,
                                min_m=config.eval.depth_min_m, max_m=config.eval.depth_max_m)


def _example_name(split: pipeline.EvalSplit, index: int) -> str:
  raw = split.source[index].get("id", str(index))
  raw = raw.decode() if isinstance(raw, bytes) else str(raw)
  return f"{index:05d}_" + re.sub(r"[^A-Za-z0-9_.-]", "_", raw)


def evaluate(config, workdir: str, *, step: int | None = None, all_steps: bool = False,
             torch_checkpoint: str = "", torch_layout: str = TORCH_LAYOUTS[0],
             save_predictions: int = 0, name: str = "", progress: bool = True
             ) -> list[dict[str, Any]]:
  """Evaluate G_task as `evaluate.py` does; the reports (also written into workdir/eval).

  Every process runs this (each evaluates its share of the split); process 0 writes.
  """
  built = models.build_models(config.model, variants.from_config(config))
  label_space = label_space_for(config.model.num_classes)
  split = pipeline.target_eval_split(config, config.eval.at_label_resolution)
  resolution = "label" if split.label_size else "input"
  depth = _depth_scales(config, split)
  if torch_checkpoint and torch_layout == "deeplab_vgg":
    depth = None  # AdaptSegNet's network has no depth head: its depth would be random
  devices = jax.devices()  # every process's: the totals are summed over all of them
  p_eval = evaluation.make_split_evaluator(built.task_net, label_space.num_classes, depth,
                                           devices)
  if torch_checkpoint:
    weights = iter([torch_weights(built, config, torch_checkpoint, torch_layout)])
  else:
    weights = checkpoint_weights(built, config, workdir, step=step, all_steps=all_steps)
  eval_dir = workdir_lib.evaluation(workdir)
  written = []
  for w in weights:
    result = evaluation.evaluate_split(
        p_eval, w.params, split.batches(config.eval.per_device_batch),
        num_examples=len(split), num_classes=label_space.num_classes,
        with_depth=depth is not None, devices=devices, num_pictures=save_predictions,
        progress=progress)
    report = reports.make_report(
        name=name or variant_name(config), variant=variant_name(config),
        checkpoint=w.checkpoint, step=w.step, dataset=split.dataset, split=split.split,
        class_names=label_space.class_names, resolution=resolution,
        metrics=evaluation.summarise(result, label_space), confusion=result.confusion,
        seconds=result.seconds)
    written.append(report)
    if is_main_process():
      stem = reports.report_stem(w.step, w.source, resolution)
      paths = reports.write_report(eval_dir, stem, report)
      for example in result.pictures:
        pictures.write_prediction_pictures(
            os.path.join(eval_dir, stem, "pictures"), _example_name(split, example["index"]),
            pictures.prediction_pictures(example, label_space))
      if w.step is not None:  # the curve over training steps, updated as each one is done
        reports.update_curve(eval_dir, report)
        _write_tensorboard(workdir, report)
      print(f"{report['name']} ({w.checkpoint}): mIoU {reports.percent(report['metrics']['miou'])}"
            f" over {report['metrics']['num_images']} images -> {paths[1]}", flush=True)
  return written


def _write_tensorboard(workdir: str, report: dict[str, Any]) -> None:
  """The report's curve scalars as eval/* (eval_input/* at input resolution) at its step."""
  from gio_ada_jax import summaries  # pylint: disable=g-import-not-at-top  (imports TensorFlow)
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


def _read_rgb(path: pathlib.Path) -> np.ndarray:
  try:
    with Image.open(path) as image:
      return np.asarray(image.convert("RGB"))
  except OSError as e:
    raise ValueError(f"{path}: not a readable image ({e}).") from None


def upsample_host(x: np.ndarray, height: int, width: int) -> np.ndarray:
  """[h, w, C] -> [height, width, C], bilinear align_corners=True (as on device)."""
  rows = align_corners_matrix(x.shape[0], height)
  cols = align_corners_matrix(x.shape[1], width)
  return np.einsum("pw,owc->opc", cols, np.einsum("oh,hwc->owc", rows, x))


def predict_images(config, weights: TaskNetWeights, images_dir: str, output_dir: str
                   ) -> list[str]:
  """Segmentation and depth pictures of every image in `images_dir` (no labels); the names.

  Each image is resized to the configured input size for the network and its predictions are
  upsampled back to the image's own size.
  """
  if not os.path.isdir(images_dir):
    raise FileNotFoundError(f"--images_dir={images_dir}: not a folder.")
  paths = sorted(p for p in pathlib.Path(images_dir).iterdir()
                 if p.suffix.lower() in IMAGE_SUFFIXES)
  if not paths:
    raise FileNotFoundError(f"{images_dir}: no images ({', '.join(IMAGE_SUFFIXES)}).")
  built = models.build_models(config.model, variants.from_config(config))
  label_space = label_space_for(config.model.num_classes)
  height, width = config.data.height, config.data.width
  # The heads' stride-8 outputs, upsampled once to each image's own size (as in evaluation).
  apply = jax.jit(lambda params, image: built.task_net.apply(
      {"params": params}, image, upsample_to_input=False))
  written = []
  for path in paths:
    rgb = _read_rgb(path)
    image = pipeline.normalise_image(pipeline.resize_image(rgb, height, width))
    logits, depth = jax.device_get(apply(weights.params, image[None]))
    logits = upsample_host(np.asarray(logits[0]), *rgb.shape[:2])
    depth = upsample_host(np.asarray(depth[0]), *rgb.shape[:2])[..., 0]
    segmentation = pictures.colourise(np.argmax(logits, axis=-1), label_space)
    depth_rgb = pictures.depth_colours(depth, scale=pictures.display_scale(depth))
    pictures.write_prediction_pictures(output_dir, path.stem, {
        "segmentation": segmentation, "depth": depth_rgb,
        "panel": pictures.panel([[rgb, segmentation, depth_rgb]])})
    written.append(path.stem)
  return written
