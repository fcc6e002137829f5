"""The one place for the project's picture mechanisms: reading an image file as 8-bit RGB,
network images and class maps as pictures, resizing, colouring depth, tiling pictures into a
panel with gaps, column titles and a colour legend, an evaluated example's pictures, and
writing a PNG.

numpy, PIL and files.atomic_write only, on uint8 [H, W, 3] arrays; the datasets' readers
(data/formats.py), the procedural contact sheet, the training summaries, the CycleGAN, the
demo's figures and the evaluation's pictures all use these.
"""

import io
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from gio_ada_jax.files import atomic_write

PANEL_GAP = 4  # pixels of white between panel tiles
TITLE_HEIGHT = 20  # pixels of the strip that holds a figure's column titles
FONT_SIZE = 12  # of titles and legend entries
# Anchor colours of a perceptually ordered dark-to-bright ramp (near to far = bright to dark
# after `depth_colours` inverts it), interpolated linearly; matplotlib's "magma" at 0, 0.2, ..., 1.
_DEPTH_RAMP = np.asarray([(0, 0, 4), (59, 15, 112), (140, 41, 129), (222, 73, 104),
                          (254, 159, 109), (252, 253, 191)], np.float32)
# 8-bit modes that PIL's convert("RGB") maps correctly: alpha is dropped (the colours as
# stored), palettes are looked up, CMYK / YCbCr / LAB / HSV are converted without ICC profiles.
_CONVERTIBLE_MODES = frozenset(("1", "L", "P", "RGB", "RGBX", "RGBA", "LA", "PA", "CMYK",
                                "YCbCr", "LAB", "HSV"))
_16_BIT_MODES = frozenset(("I;16", "I;16L", "I;16B", "I;16N", "I;16S", "I"))


class UnreadableImage(ValueError):
  """An image file that is not read, or not read correctly, as 8-bit RGB."""


def read_rgb(path) -> np.ndarray:
  """An image file -> uint8 RGB [H, W, 3] (the first frame), upright as a viewer shows it (its
  EXIF orientation applied: phones store photos sideways), or UnreadableImage naming it.

  Any mode `rgb_from_image` converts; a missing, damaged or truncated file raises too.
  """
  try:
    with Image.open(path) as image:
      image.load()
      return rgb_from_image(ImageOps.exif_transpose(image), path)
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    if isinstance(e, UnreadableImage):
      raise
    raise UnreadableImage(f"{path}: not a readable image ({type(e).__name__}: {e}).") from None


def rgb_from_image(image: Image.Image, path) -> np.ndarray:
  """A loaded PIL image -> uint8 RGB [H, W, 3]; UnreadableImage naming `path` otherwise.

  8-bit modes go through PIL's convert (alpha dropped, see _CONVERTIBLE_MODES). 16-bit gray
  (I;16*, and I, which PIL uses for 16-bit PNM) is scaled by 255 / 65535 and rounded; PIL
  itself reads 16-bit RGB PNGs as RGB keeping the high byte (within 1 of that). Float (F) is
  read on PIL's 0..255 scale. Values outside a mode's range raise instead of being clipped.
  """
  if image.mode in _16_BIT_MODES:
    return _gray_to_rgb(_sixteen_to_eight_bits(np.asarray(image), path))
  if image.mode == "F":
    return _gray_to_rgb(_float_to_eight_bits(np.asarray(image), path))
  if image.mode not in _CONVERTIBLE_MODES:
    raise UnreadableImage(
        f"{path}: image mode {image.mode} is not converted to RGB here; save it as an 8-bit "
        "RGB PNG or JPEG.")
  return np.asarray(image.convert("RGB"))


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


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """uint8 RGB [H, W, 3] -> [height, width, 3], bilinear (PIL)."""
  if image.shape[:2] == (height, width):
    return image
  return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def display_scale(depth: np.ndarray, mask: np.ndarray | None = None) -> float:
  """The 95th percentile of the (valid) depths: dividing by it spreads a picture's colours
  over its own range (depths normalised by a dataset-wide far maximum are mostly near 0)."""
  values = np.asarray(depth, np.float32)
  if mask is not None:
    values = values[np.asarray(mask) > 0]
  scale = float(np.percentile(values, 95)) if values.size else 0.0
  return scale if scale > 0 else 1.0


def depth_colours(depth: np.ndarray, mask: np.ndarray | None = None, scale: float = 1.0,
                  near: float | None = None) -> np.ndarray:
  """Depth [H, W] -> RGB, near bright and far dark; masked-out black.

  Linear by default: depth / `scale`, clipped to [0, 1]. With `near` (0 < near < scale),
  logarithmic from `near` (brightest) to `scale` (darkest): each factor of distance gets the
  same share of the colours, for metric depths spanning a few metres to hundreds.
  """
  if not scale > 0 or (near is not None and not 0 < near < scale):
    raise ValueError(f"depth_colours: scale {scale} and near {near} must satisfy 0 < scale and "
                     "0 < near < scale (near None: a linear scale from 0).")
  depth = np.asarray(depth, np.float32)
  if near is None:
    near_is_high = 1.0 - np.clip(depth / scale, 0.0, 1.0)
  else:
    near_is_high = 1.0 - np.log(np.clip(depth, near, scale) / near) / np.log(scale / near)
  position = near_is_high * (len(_DEPTH_RAMP) - 1)
  lo = np.floor(position).astype(np.int64).clip(0, len(_DEPTH_RAMP) - 2)
  frac = (position - lo)[..., None]
  rgb = _DEPTH_RAMP[lo] * (1 - frac) + _DEPTH_RAMP[lo + 1] * frac
  if mask is not None:
    rgb = np.where(np.asarray(mask)[..., None] > 0, rgb, 0.0)
  return rgb.round().astype(np.uint8)


def panel(rows: list[list[np.ndarray]], gap: int = PANEL_GAP) -> np.ndarray:
  """Tiles side by side, rows above each other, `gap` white pixels between them; every tile is
  resized (resize_image) to the size of the first."""
  height, width = rows[0][0].shape[:2]
  columns = max(len(row) for row in rows)
  out = np.full((len(rows) * (height + gap) - gap, columns * (width + gap) - gap, 3), 255,
                np.uint8)
  for r, row in enumerate(rows):
    for c, tile in enumerate(row):
      top, left = r * (height + gap), c * (width + gap)
      out[top:top + height, left:left + width] = resize_image(tile, height, width)
  return out


def _font() -> ImageFont.ImageFont:
  # Pillow's own font (no system font needed), scalable where Pillow has FreeType.
  return ImageFont.load_default(size=FONT_SIZE)


def with_column_titles(picture: np.ndarray, titles: list[str], column_width: int,
                       gap: int = PANEL_GAP) -> np.ndarray:
  """`picture` (a panel of `column_width`-wide tiles) under a white strip of TITLE_HEIGHT
  pixels with `titles` centred above its columns."""
  strip = Image.new("RGB", (picture.shape[1], TITLE_HEIGHT), "white")
  draw = ImageDraw.Draw(strip)
  for column, title in enumerate(titles):
    centre = column * (column_width + gap) + column_width / 2
    draw.text((centre, TITLE_HEIGHT / 2), title, fill="black", font=_font(), anchor="mm")
  return np.concatenate([np.asarray(strip), picture], axis=0)


def legend(names: list[str], colours: list[tuple[int, int, int]], width: int) -> np.ndarray:
  """A colour key `width` pixels wide: a swatch and the name of each class, in rows that
  wrap."""
  font, swatch, pad = _font(), FONT_SIZE, 6
  entries = [swatch + pad // 2 + int(np.ceil(font.getlength(name))) + 2 * pad for name in names]
  lines, line, used = [], [], 0
  for index, entry in enumerate(entries):
    if line and used + entry > width:
      lines.append(line)
      line, used = [], 0
    line.append(index)
    used += entry
  lines.append(line)
  row_height = swatch + pad
  strip = Image.new("RGB", (width, len(lines) * row_height + pad), "white")
  draw = ImageDraw.Draw(strip)
  for row, indices in enumerate(lines):
    left, top = pad, pad + row * row_height
    for index in indices:
      draw.rectangle((left, top, left + swatch - 1, top + swatch - 1),
                     fill=tuple(colours[index]), outline="black")
      draw.text((left + swatch + pad // 2, top + swatch / 2), names[index], fill="black",
                font=font, anchor="lm")
      left += entries[index]
  return np.asarray(strip)


def write_png(path: str, picture: np.ndarray) -> None:
  """Write an RGB uint8 picture, creating the folder; never half-written (files.atomic_write)."""
  atomic_write(path, lambda f: Image.fromarray(picture).save(f, format="PNG"))


def encode_png(picture: np.ndarray) -> bytes:
  """An RGB uint8 picture as the bytes of a PNG file (TensorBoard's pictures)."""
  buffer = io.BytesIO()
  Image.fromarray(picture).save(buffer, format="PNG")
  return buffer.getvalue()


def image_to_uint8(image: np.ndarray) -> np.ndarray:
  """A network image in [-1, 1] -> uint8 RGB."""
  return np.clip((np.asarray(image, np.float32) + 1.0) * 127.5, 0, 255).round().astype(np.uint8)


def colourise(classes: np.ndarray, palette: np.ndarray) -> np.ndarray:
  """Class indices [H, W] -> RGB in `palette` ([256, 3] uint8: a LabelSpace's palette(), the
  benchmark's Cityscapes colours with ignore black)."""
  return palette[np.clip(np.asarray(classes), 0, 255).astype(np.uint8)]


def prediction_pictures(example: dict[str, np.ndarray], palette: np.ndarray
                        ) -> dict[str, np.ndarray]:
  """The pictures of one evaluated example (`metrics._picture_inputs`): segmentation,
  depth and the panel image | prediction | ground truth (+ depth prediction | truth)."""
  height, width = example["prediction"].shape
  image = resize_image(image_to_uint8(example["image"]), height, width)
  segmentation = colourise(example["prediction"], palette)
  has_truth = bool(example["depth_mask"].any())
  # One colour scale for prediction and ground truth, so the two can be compared.
  scale = (display_scale(example["depth"], example["depth_mask"]) if has_truth
           else display_scale(example["predicted_depth"]))
  depth = depth_colours(example["predicted_depth"], scale=scale)
  rows = [[image, segmentation, colourise(example["label"], palette)]]
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
