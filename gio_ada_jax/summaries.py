"""TensorBoard summaries of a training run: every metric, the learning rate, and pictures
(source, translated source, target, predicted segmentation and depth; paper Figures 3 and 4).

Only process 0 writes. TensorFlow (behind flax.metrics.tensorboard) is imported here only, with
the GPUs hidden from it.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gio_ada_jax.data.labels import label_space_for
from gio_ada_jax.models import GioAdaModels
from gio_ada_jax.train_step import translate


def open_writer(logdir: str):
  """A TensorBoard SummaryWriter on process 0; None elsewhere."""
  if jax.process_index() != 0:
    return None
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")
  from flax.metrics import tensorboard  # pylint: disable=g-import-not-at-top
  return tensorboard.SummaryWriter(logdir)


@functools.partial(jax.jit, static_argnames=("models", "input_level"))
def _predict(params, batch, models: GioAdaModels, input_level: str):
  translated = translate(models, params, batch, input_level)
  seg_s, depth_s = models.task_net.apply({"params": params["task_net"]}, translated)
  seg_t, depth_t = models.task_net.apply({"params": params["task_net"]}, batch["target_image"])
  return {"translated": translated, "seg_s": jnp.argmax(seg_s, -1), "depth_s": depth_s,
          "seg_t": jnp.argmax(seg_t, -1), "depth_t": depth_t}


def _to_uint8(images: np.ndarray) -> np.ndarray:
  return np.clip((np.asarray(images, np.float32) + 1.0) * 127.5, 0, 255).astype(np.uint8)


def _depth_to_uint8(depth: np.ndarray) -> np.ndarray:
  grey = np.clip(np.asarray(depth, np.float32)[..., 0], 0.0, 1.0)
  return np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=-1)


def pictures(params, batch, models: GioAdaModels, input_level: str,
             num_classes: int) -> dict[str, np.ndarray]:
  """uint8 [N, H, W, 3] pictures of one (single-device) batch."""
  out = jax.device_get(_predict(params, batch, models, input_level))
  palette = label_space_for(num_classes).palette()
  return {"source": _to_uint8(batch["source_image"]),
          "source_translated": _to_uint8(out["translated"]),
          "source_label": palette[np.asarray(batch["source_label"]).astype(np.uint8)],
          "source_prediction": palette[out["seg_s"].astype(np.uint8)],
          "source_depth_prediction": _depth_to_uint8(out["depth_s"]),
          "target": _to_uint8(batch["target_image"]),
          "target_prediction": palette[out["seg_t"].astype(np.uint8)],
          "target_depth_prediction": _depth_to_uint8(out["depth_t"])}


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
    writer.image(f"pictures/{name}", batch, step, max_outputs=2)
  writer.flush()
