"""Pictures of predictions: colourised segmentation (Cityscapes palette), depth maps and panels.

Everything here is numpy on uint8 [H, W, 3] arrays, written as PNG with PIL; `read_rgb` turns
any image file PIL opens into one.
"""

import os

import numpy as np
from PIL import Image

from gio_ada_jax.data.labels import LabelSpace
from gio_ada_jax.data.pipeline import resize_image
from gio_ada_jax.files import atomic_write

# Anchor colours of a perceptually ordered dark-to-bright ramp (near to far = bright to dark
# after `depth_colours` inverts it), interpolated linearly; close to matplotlib's "magma".
_DEPTH_RAMP = np.asarray([(0, 0, 4), (59, 15, 112), (140, 41, 129), (222, 73, 104),
                          (254, 159, 109), (252, 253, 191)], np.float32)
PANEL_GAP = 4  # pixels of white between panel tiles
# 8-bit modes that PIL's convert("RGB") maps correctly: alpha is dropped (the colours as
# stored), palettes are looked up, CMYK / YCbCr / LAB / HSV are converted without ICC profiles.
_CONVERTIBLE_MODES = frozenset(("1", "L", "P", "RGB", "RGBX", "RGBA", "LA", "PA", "CMYK",
                                "YCbCr", "LAB", "HSV"))
_16_BIT_MODES = frozenset(("I;16", "I;16L", "I;16B", "I;16N", "I;16S", "I"))


class UnreadableImage(ValueError):
  """An image file that is not read, or not read correctly, as 8-bit RGB."""


def read_rgb(path) -> np.ndarray:
  """An image file -> uint8 RGB [H, W, 3] (the first frame), or UnreadableImage naming it.

  8-bit modes go through PIL's convert (alpha dropped, see _CONVERTIBLE_MODES). 16-bit gray
  (I;16*, and I, which PIL uses for 16-bit PNM) is scaled by 255 / 65535 and rounded; PIL
  itself reads 16-bit RGB PNGs as RGB keeping the high byte (within 1 of that). Float (F) is
  read on PIL's 0..255 scale. Values outside a mode's range raise instead of being clipped.
  """
  try:
    with Image.open(path) as image:
      image.load()
      if image.mode in _16_BIT_MODES:
        return _gray_to_rgb(_sixteen_to_eight_bits(np.asarray(image), path))
      if image.mode == "F":
        return _gray_to_rgb(_float_to_eight_bits(np.asarray(image), path))
      if image.mode not in _CONVERTIBLE_MODES:
        raise UnreadableImage(
            f"{path}: image mode {image.mode} is not converted to RGB here; save it as an 8-bit "
            "RGB PNG or JPEG.")
      return np.asarray(image.convert("RGB"))
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    if isinstance(e, UnreadableImage):
      raise
    raise UnreadableImage(f"{path}: not a readable image ({type(e).__name__}: {e}).") from None


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
  return np.repeat(gray[..., None], 3, axis=-1)


def _sixteen_to_eight_bits(values: np.ndarray, path) -> np.ndarray:
  values = values.astype(np.int64)
  if values.size and (values.min() < 0 or values.max() > 65535):
    raise UnreadableImage(
        f"{path}: integer values from {values.min()} to {values.max()}, outside the 16-bit "
        "range 0..65535 that is scaled to 8 bits; save it as an 8- or 16-bit PNG.")
  return ((values * 255 + 32767) // 65535).astype(np.uint8)  # round(v * 255 / 65535)


def _float_to_eight_bits(values: np.ndarray, path) -> np.ndarray:
  values = values.astype(np.float64)
  low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
  if not np.isfinite(values).all() or low < 0 or high > 255:
    raise UnreadableImage(
        f"{path}: float values from {low} to {high} (NaN or infinite: "
        f"{not np.isfinite(values).all()}); float images are read on the 0..255 scale of "
        "8-bit ones. Save it as an 8-bit PNG.")
  if 0 < high <= 1:
    raise UnreadableImage(
        f"{path}: float values within [0, 1]: float images are read on the 0..255 scale of "
        "8-bit ones (as PIL converts them), so this one would be black. Multiply it by 255 or "
        "save it as an 8-bit PNG.")
  return np.round(values).astype(np.uint8)


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


def panel(rows: list[list[np.ndarray]]) -> np.ndarray:
  """Tiles of equal size side by side, rows above each other, with white gaps."""
  height, width = rows[0][0].shape[:2]
  columns = max(len(row) for row in rows)
  out = np.full((len(rows) * (height + PANEL_GAP) - PANEL_GAP,
                 columns * (width + PANEL_GAP) - PANEL_GAP, 3), 255, np.uint8)
  for r, row in enumerate(rows):
    for c, tile in enumerate(row):
      top, left = r * (height + PANEL_GAP), c * (width + PANEL_GAP)
      out[top:top + height, left:left + width] = resize_image(tile, height, width)
  return out


def write_png(path: str, picture: np.ndarray) -> None:
  """Write an RGB uint8 picture, creating the folder; never half-written (files.atomic_write)."""
  atomic_write(path, lambda f: Image.fromarray(picture).save(f, format="PNG"))


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
