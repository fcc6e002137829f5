"""TensorBoard summaries of a training run: every metric, the learning rate, and pictures
(source, translated source, target, predicted segmentation and depth; paper Figures 3 and 4).

Only process 0 writes. The event files are written without TensorFlow (whose import took
3 s of every training process): TensorBoard's own protos, framed by its RecordWriter.
"""

import functools
import os
import socket
import time

import jax
import jax.numpy as jnp
import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2
from tensorboard.compat.proto import types_pb2
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.summary.writer.record_writer import RecordWriter

from gio_ada_jax.data.labels import label_space_for
from gio_ada_jax.distributed import is_main_process
from gio_ada_jax.images import colourise, depth_colours, display_scale, encode_png, image_to_uint8
from gio_ada_jax.models import GioAdaModels
from gio_ada_jax.train.step import forward
from gio_ada_jax.variants import Variant


NUM_PICTURES = 2  # examples of each kind shown in TensorBoard per picture step


class SummaryWriter:
  """An event file of scalars and PNG pictures, as tf.summary writes them (TensorBoard's
  scalar and image plugins), in a new file under `logdir`."""

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.v2"
    self._records = RecordWriter(open(os.path.join(logdir, name), "wb"))
    self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

  def _write(self, event) -> None:
    self._records.write(event.SerializeToString())

  def _summary(self, step: int, tag: str, metadata, tensor) -> None:
    value = summary_pb2.Summary.Value(tag=tag, metadata=metadata, tensor=tensor)
    self._write(event_pb2.Event(wall_time=time.time(), step=int(step),
                                summary=summary_pb2.Summary(value=[value])))

  def scalar(self, tag: str, value: float, step: int) -> None:
    self._summary(step, tag, scalar_metadata.create_summary_metadata(tag, ""),
                  tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[float(value)],
                                         tensor_shape=tensor_shape_pb2.TensorShapeProto()))

  def image(self, tag: str, images: np.ndarray, step: int, max_outputs: int = 3) -> None:
    """uint8 [N, H, W, 3] pictures: the first max_outputs, as PNG."""
    pngs = [encode_png(picture) for picture in np.asarray(images, np.uint8)[:max_outputs]]
    height, width = np.shape(images)[1:3]
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(pngs) + 2)])
    self._summary(step, tag, image_metadata.create_summary_metadata(tag, ""),
                  tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape,
                                         string_val=[str(width).encode(),
                                                     str(height).encode(), *pngs]))

  def flush(self) -> None:
    self._records.flush()

  def close(self) -> None:
    self._records.close()


def open_writer(logdir: str) -> SummaryWriter | None:
  """A TensorBoard SummaryWriter on process 0; None elsewhere."""
  return SummaryWriter(logdir) if is_main_process() else None


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
  palette = label_space_for(num_classes).palette()
  return {"source": image_to_uint8(batch["source_image"]),
          "source_translated": image_to_uint8(out["translated"]),
          "source_label": colourise(batch["source_label"], palette),
          "source_prediction": colourise(out["seg_s"], palette),
          "source_depth_prediction": _depth_picture(out["depth_s"][..., 0]),
          "target": image_to_uint8(batch["target_image"]),
          "target_prediction": colourise(out["seg_t"], palette),
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
