"""Pictures of predictions: colourised segmentation (Cityscapes palette), depth maps and panels.

Everything here is numpy on uint8 [H, W, 3] arrays, built on the shared picture helpers of
gio_ada_jax/images.py (reading, depth colours, panels, PNG writing).
"""

import os

import numpy as np

from gio_ada_jax.data.labels import LabelSpace
from gio_ada_jax.images import depth_colours, display_scale, panel, resize_image, write_png


def image_to_uint8(image: np.ndarray) -> np.ndarray:
  """A network image in [-1, 1] -> uint8 RGB."""
  return np.clip((np.asarray(image, np.float32) + 1.0) * 127.5, 0, 255).round().astype(np.uint8)


def colourise(classes: np.ndarray, label_space: LabelSpace) -> np.ndarray:
  """Class indices [H, W] -> RGB in the benchmark's Cityscapes colours (ignore = black)."""
  return label_space.palette()[np.clip(np.asarray(classes), 0, 255).astype(np.uint8)]


def prediction_pictures(example: dict[str, np.ndarray], label_space: LabelSpace
                        ) -> dict[str, np.ndarray]:
  """The pictures of one evaluated example (`metrics._picture_inputs`): segmentation,
  depth and the panel image | prediction | ground truth (+ depth prediction | truth)."""
  height, width = example["prediction"].shape
  image = resize_image(image_to_uint8(example["image"]), height, width)
  segmentation = colourise(example["prediction"], label_space)
  has_truth = bool(example["depth_mask"].any())
  # One colour scale for prediction and ground truth, so the two can be compared.
  scale = (display_scale(example["depth"], example["depth_mask"]) if has_truth
           else display_scale(example["predicted_depth"]))
  depth = depth_colours(example["predicted_depth"], scale=scale)
  rows = [[image, segmentation, colourise(example["label"], label_space)]]
  if has_truth:
    rows.append([image, depth, depth_colours(example["depth"], example["depth_mask"], scale)])
  return {"segmentation": segmentation, "depth": depth, "panel": panel(rows)}


def write_prediction_pictures(directory: str, name: str, pictures: dict[str, np.ndarray]
                              ) -> list[str]:
  """Write `name`_segmentation.png, _depth.png, _panel.png; the paths."""
  paths = []
  for kind, picture in pictures.items():
    path = os.path.join(directory, f"{name}_{kind}.png")
    write_png(path, picture)
    paths.append(path)
  return paths
