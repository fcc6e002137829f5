"""Pictures of predictions: colourised segmentation (Cityscapes palette), depth maps and panels.

Everything here is numpy on uint8 [H, W, 3] arrays, written as PNG with PIL.
"""

import os

import numpy as np
from PIL import Image

from gio_ada_jax.data.labels import LabelSpace

# Anchor colours of a perceptually ordered dark-to-bright ramp (near to far = bright to dark
# after `depth_colours` inverts it), interpolated linearly; close to matplotlib's "magma".
_DEPTH_RAMP = np.asarray([(0, 0, 4), (59, 15, 112), (140, 41, 129), (222, 73, 104),
                          (254, 159, 109), (252, 253, 191)], np.float32)
PANEL_GAP = 4  # pixels of white between panel tiles


def image_to_uint8(image: np.ndarray) -> np.ndarray:
  """A network image in [-1, 1] -> uint8 RGB."""
  return np.clip((np.asarray(image, np.float32) + 1.0) * 127.5, 0, 255).round().astype(np.uint8)


def colourise(classes: np.ndarray, label_space: LabelSpace) -> np.ndarray:
  """Class indices [H, W] -> RGB in the benchmark's Cityscapes colours (ignore = black)."""
  return label_space.palette()[np.clip(np.asarray(classes), 0, 255).astype(np.uint8)]


def display_scale(depth: np.ndarray, mask: np.ndarray | None = None) -> float:
  """The 95th percentile of the (valid) depths: dividing by it spreads a picture's colours
  over its own range (depths normalised by a dataset-wide far maximum are mostly near 0)."""
  values = np.asarray(depth, np.float32)
  if mask is not None:
    values = values[np.asarray(mask) > 0]
  scale = float(np.percentile(values, 95)) if values.size else 0.0
  return scale if scale > 0 else 1.0


def depth_colours(depth: np.ndarray, mask: np.ndarray | None = None,
                  scale: float = 1.0) -> np.ndarray:
  """Depth [H, W] / `scale`, clipped to [0, 1] -> RGB, near bright and far dark; masked-out
  black."""
  near_is_high = 1.0 - np.clip(np.asarray(depth, np.float32) / scale, 0.0, 1.0)
  position = near_is_high * (len(_DEPTH_RAMP) - 1)
  lo = np.floor(position).astype(np.int64).clip(0, len(_DEPTH_RAMP) - 2)
  frac = (position - lo)[..., None]
  rgb = _DEPTH_RAMP[lo] * (1 - frac) + _DEPTH_RAMP[lo + 1] * frac
  if mask is not None:
    rgb = np.where(np.asarray(mask)[..., None] > 0, rgb, 0.0)
  return rgb.round().astype(np.uint8)


def resize_to(picture: np.ndarray, height: int, width: int) -> np.ndarray:
  """Bilinear resize of an RGB picture (for tiles of different sizes in one panel)."""
  if picture.shape[:2] == (height, width):
    return picture
  return np.asarray(Image.fromarray(picture).resize((width, height), Image.BILINEAR))


def panel(rows: list[list[np.ndarray]]) -> np.ndarray:
  """Tiles of equal size side by side, rows above each other, with white gaps."""
  height, width = rows[0][0].shape[:2]
  columns = max(len(row) for row in rows)
  out = np.full((len(rows) * (height + PANEL_GAP) - PANEL_GAP,
                 columns * (width + PANEL_GAP) - PANEL_GAP, 3), 255, np.uint8)
  for r, row in enumerate(rows):
    for c, tile in enumerate(row):
      top, left = r * (height + PANEL_GAP), c * (width + PANEL_GAP)
      out[top:top + height, left:left + width] = resize_to(tile, height, width)
  return out


def write_png(path: str, picture: np.ndarray) -> None:
  """Write an RGB uint8 picture, creating the folder; never half-written (rename at the end)."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  Image.fromarray(picture).save(path + ".tmp", format="PNG")
  os.replace(path + ".tmp", path)


def prediction_pictures(example: dict[str, np.ndarray], label_space: LabelSpace
                        ) -> dict[str, np.ndarray]:
  """The pictures of one evaluated example (`evaluation._picture_inputs`): segmentation,
  depth and the panel image | prediction | ground truth (+ depth prediction | truth)."""
  height, width = example["prediction"].shape
  image = resize_to(image_to_uint8(example["image"]), height, width)
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
