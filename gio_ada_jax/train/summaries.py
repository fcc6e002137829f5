"""TensorBoard summaries of a training run: every metric, the learning rate, and pictures
(source, translated source, target, predicted segmentation and depth; paper Figures 3 and 4).

Only process 0 writes. TensorFlow (behind flax.metrics.tensorboard) is imported here only, with
the GPUs hidden from it.
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from gio_ada_jax.data.labels import label_space_for
from gio_ada_jax.distributed import is_main_process
from gio_ada_jax.eval.pictures import colourise, image_to_uint8
from gio_ada_jax.images import depth_colours, display_scale
from gio_ada_jax.models import GioAdaModels
from gio_ada_jax.train.step import forward
from gio_ada_jax.variants import Variant


NUM_PICTURES = 2  # examples of each kind shown in TensorBoard per picture step


def open_writer(logdir: str):
  """A TensorBoard SummaryWriter on process 0; None elsewhere."""
  if not is_main_process():
    return None
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's C++ start-up notices
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")
  from flax.metrics import tensorboard  # pylint: disable=g-import-not-at-top
  return tensorboard.SummaryWriter(logdir)


@functools.partial(jax.jit, static_argnames=("models", "variant"))
def _predict(params, batch, models: GioAdaModels, variant: Variant):
  outputs = forward(models, params, batch, variant)  # the step's own forward pass
  return {**outputs, "seg_s": jnp.argmax(outputs["seg_s"], -1),
          "seg_t": jnp.argmax(outputs["seg_t"], -1)}


def pictures(params, batch, models: GioAdaModels, variant: Variant,
             num_classes: int) -> dict[str, np.ndarray]:
  """uint8 [N, H, W, 3] pictures of the first NUM_PICTURES examples of a batch, predicted on
  one device."""
  # Only these are shown, and one device predicts them: a mesh's first row holds a whole data
  # row of examples that the step split over the spatial devices.
  batch = jax.tree.map(lambda x: x[:NUM_PICTURES], batch)
  out = jax.device_get(_predict(params, batch, models, variant))
  space = label_space_for(num_classes)
  return {"source": image_to_uint8(batch["source_image"]),
          "source_translated": image_to_uint8(out["translated"]),
          "source_label": colourise(batch["source_label"], space),
          "source_prediction": colourise(out["seg_s"], space),
          "source_depth_prediction": _depth_picture(out["depth_s"][..., 0]),
          "target": image_to_uint8(batch["target_image"]),
          "target_prediction": colourise(out["seg_t"], space),
          "target_depth_prediction": _depth_picture(out["depth_t"][..., 0])}


def _depth_picture(depth: np.ndarray) -> np.ndarray:
  return depth_colours(depth, scale=display_scale(depth))


def write_scalars(writer, step: int, metrics: dict[str, float], learning_rate: float) -> None:
  if writer is None:
    return
  for name, value in metrics.items():
    writer.scalar(f"train/{name}", value, step)
  writer.scalar("train/learning_rate", learning_rate, step)
  writer.flush()


def write_pictures(writer, step: int, images: dict[str, np.ndarray]) -> None:
  if writer is None:
    return
  for name, batch in images.items():
    writer.image(f"pictures/{name}", batch, step, max_outputs=NUM_PICTURES)
  writer.flush()
