"""Readers of the official on-disk layouts of the four datasets (no TFDS here).

Each dataset has one format object in `FORMATS` with the same two steps:
`list_examples(manual_dir, split)` finds the files of a split (sorted, deterministic) and checks
that every image has its label/depth file; `read_example(raw)` decodes one example into
  {"id": str, "image": uint8 [H, W, 3], "label": uint8 [H, W] (label-space index, 255 ignore),
   "depth": uint16 [H, W] centimetres, 0 = invalid (only when the format has depth)}.
`manual_dir` holds the official archives extracted side by side; every top folder of an archive
may also sit one level down (e.g. `manual_dir/RAND_CITYSCAPES/RGB`).

Every bad input raises `DataError` naming the file or folder, what is wrong and how to fix it.

Depth conventions (prepared data version 2): centimetres, 0 = invalid (no measurement), and
FAR_DEPTH_CM = 65535 (655.35 m, the uint16 maximum) = the far clip: the sky and everything
beyond. Virtual KITTI stores its sky that way and is kept as stored. SYNTHIA's pixels labelled
sky are set to FAR_DEPTH_CM (its README does not say how the sky is encoded); the rest is kept as
stored. The pipeline then treats the far clip as the far end of the depth range (after the
paper's "the sky is always far away"), or as invalid with `data.sky_depth = "invalid"` (data
version 1).
"""

import dataclasses
import functools
import os
import pathlib
import re
from typing import Protocol

import numpy as np
from PIL import Image

from gio_ada_jax.data import labels
from gio_ada_jax.data.labels import IGNORE_LABEL, LabelSpace
from gio_ada_jax.errors import UserError
from gio_ada_jax.images import rgb_from_image

# The far clip in centimetres: Virtual KITTI's value for the sky and anything beyond 655.35 m,
# used for every dataset's sky.
FAR_DEPTH_CM = 65535


class DataError(UserError, ValueError):
  """Bad input data: the message names the file or folder, what is wrong and how to fix it."""


@dataclasses.dataclass(frozen=True)
class RawExample:
  """The files of one example, as found by `list_examples`."""

  example_id: str  # unique within the dataset, stable (e.g. "0001/clone/00042")
  image_path: pathlib.Path
  label_path: pathlib.Path | None
  depth_path: pathlib.Path | None
  encoding_path: pathlib.Path | None = None  # Virtual KITTI colour table of this world/variation


class DatasetFormat(Protocol):
  """What every dataset reader offers."""

  name: str
  label_space: LabelSpace
  splits: tuple[str, ...]
  has_depth: bool

  def list_examples(self, manual_dir: str | os.PathLike, split: str) -> list[RawExample]:
    ...

  def read_example(self, raw: RawExample) -> dict:
    ...


# ---------------------------------------------------------------------------- file helpers


def _find_dir(manual_dir: pathlib.Path, relative: str) -> list[pathlib.Path]:
  """`manual_dir/relative` if it is a folder, else every `manual_dir/<one folder>/relative`."""
  direct = manual_dir / relative
  if direct.is_dir():
    return [direct]
  return sorted(path for path in manual_dir.glob(f"*/{relative}") if path.is_dir())


def _locate(manual_dir: pathlib.Path, relative: str, archive: str) -> pathlib.Path:
  """`manual_dir/relative`, or `manual_dir/<one folder>/relative`; else a DataError."""
  found = _find_dir(manual_dir, relative)
  if len(found) > 1:
    raise DataError(f"{relative!r} found more than once under {manual_dir}: "
                    f"{', '.join(map(str, found))}; keep one extracted copy of {archive}")
  if not found:
    raise DataError(f"folder {relative!r} not found in {manual_dir} (nor one folder down); it "
                    f"comes from {archive}: download it and extract it into {manual_dir}")
  return found[0]


def _child_ignoring_case(parent: pathlib.Path, name: str) -> pathlib.Path | None:
  """The file or folder in `parent` called `name` in any letter case, or None."""
  if not parent.is_dir():
    return None
  for child in sorted(parent.iterdir()):
    if child.name.lower() == name.lower():
      return child
  return None


def _check_split(dataset: str, split: str, splits: tuple[str, ...]) -> None:
  if split not in splits:
    raise DataError(f"{dataset} has no split {split!r}; its splits are {splits}")


def _check_not_empty(examples: list[RawExample], dataset: str, split: str,
                     where: pathlib.Path) -> list[RawExample]:
  if not examples:
    raise DataError(f"{dataset} split {split!r} is empty: no images found in {where}; check "
                    "that the archives were extracted completely")
  return examples


def _check_partner(image_path: pathlib.Path, partner: pathlib.Path, what: str,
                   archive: str) -> pathlib.Path:
  """`partner` if it exists; else a DataError saying that `image_path` lacks its `what`."""
  if not partner.is_file():
    raise DataError(f"image {image_path} has no {what} file: {partner} is missing; re-extract "
                    f"{archive} or remove the image")
  return partner


def _open_image(path: pathlib.Path) -> Image.Image:
  """A fully decoded PIL image; unreadable or truncated files raise DataError."""
  try:
    image = Image.open(path)
    image.load()  # Decodes every byte now, so truncated files fail here, not later.
  except FileNotFoundError:
    raise DataError(f"{path} does not exist; re-extract its archive") from None
  except (OSError, SyntaxError, ValueError) as error:
    raise DataError(f"{path} is not a readable image ({error}); the file is damaged or "
                    "truncated: re-extract it from its archive") from None
  return image


def _read_rgb(path: pathlib.Path) -> np.ndarray:
  """An 8-bit colour image -> uint8 [H, W, 3] (images.rgb_from_image).

  Stricter than images.read_rgb, which reads any image a user gives: a dataset's images are
  8-bit RGB, so another mode (16-bit, CMYK, ...) means a wrong file, not one to convert.
  """
  image = _open_image(path)
  if image.mode not in ("RGB", "RGBA", "P", "L"):
    raise DataError(f"{path} has PIL mode {image.mode!r}; expected an 8-bit RGB image")
  return rgb_from_image(image, path)


def _read_label_ids(path: pathlib.Path) -> np.ndarray:
  """An 8-bit single-channel id PNG -> uint8 [H, W]."""
  image = _open_image(path)
  if image.mode not in ("L", "P"):
    raise DataError(f"{path} has PIL mode {image.mode!r}; expected a single-channel 8-bit "
                    "labelId PNG (not the colour visualisation)")
  return np.asarray(image, np.uint8)


def _read_depth_gray16(path: pathlib.Path) -> np.ndarray:
  """A 16-bit grayscale PNG -> uint16 [H, W]."""
  image = _open_image(path)
  if image.mode not in ("I;16", "I;16B", "I;16L", "I"):
    raise DataError(f"{path} has PIL mode {image.mode!r}; expected a 16-bit grayscale depth PNG")
  return np.asarray(image).astype(np.uint16)


@functools.cache
def _tensorflow():
  """TensorFlow, imported on first use and kept off the GPUs (JAX owns them)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:  # Devices already initialised by someone else: leave them.
    pass
  return tf


def _read_png_channels(path: pathlib.Path) -> np.ndarray:
  """Any PNG, 8- or 16-bit, any channel count -> [H, W, C] uint8 or uint16, as stored.

  PIL cannot read 16-bit multi-channel PNGs (SYNTHIA labels and depth), TensorFlow can.
  """
  tf = _tensorflow()
  try:
    data = path.read_bytes()
  except OSError as error:
    raise DataError(f"{path} cannot be read ({error}); re-extract its archive") from None
  # IHDR's bit-depth byte: decoding an 8-bit PNG as uint16 would rescale its values.
  dtype = tf.uint16 if len(data) > 24 and data[24] == 16 else tf.uint8
  try:
    return tf.io.decode_png(data, channels=0, dtype=dtype).numpy()
  except tf.errors.OpError as error:
    raise DataError(f"{path} is not a readable PNG ({error.message}); the file is damaged or "
                    "truncated: re-extract it from its archive") from None


def _check_same_size(image_path: pathlib.Path, image: np.ndarray, other_path: pathlib.Path,
                     other: np.ndarray) -> None:
  if image.shape[:2] != other.shape[:2]:
    raise DataError(f"{other_path} is {other.shape[1]}x{other.shape[0]} (WxH) but its image "
                    f"{image_path} is {image.shape[1]}x{image.shape[0]}; the two files do not "
                    "belong together")


def _count_values(values: np.ndarray) -> str:
  unique, counts = np.unique(values, return_counts=True)
  return ", ".join(f"{value}: {count} px" for value, count in zip(unique.tolist(), counts.tolist()))


def _map_ids(ids: np.ndarray, lut: np.ndarray, max_id: int, path: pathlib.Path) -> np.ndarray:
  """Raw class ids -> label-space indices; ids above `max_id` raise DataError with counts."""
  out_of_table = ids > max_id
  if out_of_table.any():
    raise DataError(f"{path} holds class ids outside the table (0..{max_id}): "
                    f"{_count_values(ids[out_of_table])}; is it the right kind of label file?")
  return lut[ids.astype(np.intp)]


def _sorted_files(folder: pathlib.Path, pattern: str) -> list[pathlib.Path]:
  return sorted(path for path in folder.glob(pattern) if path.is_file())


# --------------------------------------------------------------------------- Virtual KITTI

_VKITTI_131_ARCHIVES = {"rgb": "vkitti_1.3.1_rgb.tar", "scenegt": "vkitti_1.3.1_scenegt.tar",
                        "depthgt": "vkitti_1.3.1_depthgt.tar"}
_VKITTI_203_ARCHIVES = {"rgb": "vkitti_2.0.3_rgb.tar", "depth": "vkitti_2.0.3_depth.tar",
                        "classsegmentation": "vkitti_2.0.3_classSegmentation.tar",
                        "textgt": "vkitti_2.0.3_textgt.tar.gz"}
# The left camera: its 21,260 frames are the paper's count (1.3.1 has only this view).
_VKITTI_CAMERA = "Camera_0"
_SCENE_PATTERN = re.compile(r"Scene\d+")


@functools.lru_cache(maxsize=256)
def _vkitti_colour_table(path: pathlib.Path) -> dict[int, int]:
  """The parsed colour table of one world/variation (cached: many frames share it)."""
  try:
    text = path.read_text()
  except OSError as error:
    raise DataError(f"{path} cannot be read ({error}); re-extract it from its archive") from None
  try:
    return labels.parse_vkitti_colour_table(text, str(path))
  except labels.EncodingError as error:
    raise DataError(f"{error}; the colour table is damaged or not a Virtual KITTI one") from None


def _vkitti_131_examples(manual_dir: pathlib.Path) -> list[RawExample]:
  """Virtual KITTI 1.3.1: `vkitti_1.3.1_{rgb,scenegt,depthgt}/<world>/<variation>/%05d.png`."""
  rgb_root = _locate(manual_dir, "vkitti_1.3.1_rgb", _VKITTI_131_ARCHIVES["rgb"])
  label_root = _locate(manual_dir, "vkitti_1.3.1_scenegt", _VKITTI_131_ARCHIVES["scenegt"])
  depth_root = _locate(manual_dir, "vkitti_1.3.1_depthgt", _VKITTI_131_ARCHIVES["depthgt"])
  examples = []
  for image_path in _sorted_files(rgb_root, "*/*/*.png"):
    world, variation = image_path.parent.parent.name, image_path.parent.name
    sequence = pathlib.Path(world, variation, image_path.name)
    encoding = label_root / f"{world}_{variation}_scenegt_rgb_encoding.txt"
    examples.append(RawExample(
        example_id=f"{world}/{variation}/{image_path.stem}",
        image_path=image_path,
        label_path=_check_partner(image_path, label_root / sequence, "label",
                                  _VKITTI_131_ARCHIVES["scenegt"]),
        depth_path=_check_partner(image_path, depth_root / sequence, "depth",
                                  _VKITTI_131_ARCHIVES["depthgt"]),
        encoding_path=_check_partner(image_path, encoding, "colour table",
                                     _VKITTI_131_ARCHIVES["scenegt"])))
  return examples


def _vkitti_203_scene_roots(manual_dir: pathlib.Path) -> list[pathlib.Path]:
  """Folders holding `SceneXX` folders: `manual_dir` and its children (one per tarball)."""
  candidates = [manual_dir] + sorted(path for path in manual_dir.iterdir() if path.is_dir())
  return [root for root in candidates
          if any(_SCENE_PATTERN.fullmatch(child.name) and child.is_dir()
                 for child in root.iterdir())]


def _vkitti_203_find(roots: list[pathlib.Path], sequence: tuple[str, str],
                     parts: tuple[str, ...], archive: str) -> pathlib.Path:
  """`<root>/<scene>/<variation>/<parts...>` in the first root holding it (any letter case)."""
  for root in roots:
    path = root.joinpath(*sequence)
    for part in parts:
      path = _child_ignoring_case(path, part)
      if path is None:
        break
    if path is not None:
      return path
  raise DataError(f"{'/'.join(sequence + parts)} not found under any of "
                  f"{', '.join(map(str, roots))}; it comes from {archive}: extract it into "
                  "the same folder as the other Virtual KITTI 2 tarballs")


def _vkitti_203_examples(manual_dir: pathlib.Path) -> list[RawExample]:
  """Virtual KITTI 2.0.3: `SceneXX/<variation>/frames/{rgb,depth,classSegmentation}/Camera_0`."""
  roots = _vkitti_203_scene_roots(manual_dir)
  examples = []
  for root in roots:
    for image_dir in sorted(root.glob(f"Scene*/*/frames/rgb/{_VKITTI_CAMERA}")):
      variation_dir = image_dir.parents[2]
      sequence = (variation_dir.parent.name, variation_dir.name)
      label_dir = _vkitti_203_find(roots, sequence,
                                   ("frames", "classSegmentation", _VKITTI_CAMERA),
                                   _VKITTI_203_ARCHIVES["classsegmentation"])
      depth_dir = _vkitti_203_find(roots, sequence, ("frames", "depth", _VKITTI_CAMERA),
                                   _VKITTI_203_ARCHIVES["depth"])
      colours = _vkitti_203_find(roots, sequence, ("colors.txt",),
                                 _VKITTI_203_ARCHIVES["textgt"])
      for image_path in _sorted_files(image_dir, "rgb_*.jpg"):
        frame = image_path.stem.removeprefix("rgb_")
        examples.append(RawExample(
            example_id=f"{sequence[0]}/{sequence[1]}/{frame}",
            image_path=image_path,
            label_path=_check_partner(image_path, label_dir / f"classgt_{frame}.png", "label",
                                      _VKITTI_203_ARCHIVES["classsegmentation"]),
            depth_path=_check_partner(image_path, depth_dir / f"depth_{frame}.png", "depth",
                                      _VKITTI_203_ARCHIVES["depth"]),
            encoding_path=colours))
  ids = [example.example_id for example in examples]
  if len(set(ids)) != len(ids):
    raise DataError(f"the same Virtual KITTI 2 frames were found in several of "
                    f"{', '.join(map(str, roots))}; keep one extracted copy of each tarball")
  return sorted(examples, key=lambda example: example.example_id)


class VirtualKittiFormat:
  """Virtual KITTI 1.3.1 or 2.0.3 (detected), Camera_0; "train" = every world and variation."""

  name = "vkitti"
  label_space = labels.VKITTI_KITTI_10
  splits = ("train",)
  has_depth = True

  def list_examples(self, manual_dir: str | os.PathLike, split: str) -> list[RawExample]:
    """Every frame of every world and variation, sorted by id."""
    _check_split(self.name, split, self.splits)
    manual_dir = pathlib.Path(manual_dir)
    if not manual_dir.is_dir():
      raise DataError(f"manual_dir {manual_dir} does not exist; extract the Virtual KITTI "
                      "tarballs into it")
    if _find_dir(manual_dir, "vkitti_1.3.1_rgb"):
      examples = _vkitti_131_examples(manual_dir)
    elif _vkitti_203_scene_roots(manual_dir):
      examples = _vkitti_203_examples(manual_dir)
    else:
      raise DataError(
          f"no Virtual KITTI found in {manual_dir}: expected vkitti_1.3.1_rgb/ (from "
          f"{_VKITTI_131_ARCHIVES['rgb']}) or Scene01/... folders (from "
          f"{_VKITTI_203_ARCHIVES['rgb']}) in it or one folder down")
    return _check_not_empty(examples, self.name, split, manual_dir)

  def read_example(self, raw: RawExample) -> dict:
    """Image, 10-class label from the colour table, depth in cm as stored (sky: 65535)."""
    image = _read_rgb(raw.image_path)
    colours = _read_rgb(raw.label_path)
    _check_same_size(raw.image_path, image, raw.label_path, colours)
    label, unknown = labels.rgb_to_class(colours, _vkitti_colour_table(raw.encoding_path))
    if unknown:
      listed = ", ".join(f"{labels.unpack_rgb(packed)}: {count} px"
                         for packed, count in sorted(unknown.items()))
      raise DataError(f"{raw.label_path} has colours that are not in {raw.encoding_path}: "
                      f"{listed}; the label and colour table do not belong together")
    depth = _read_depth_gray16(raw.depth_path)
    _check_same_size(raw.image_path, image, raw.depth_path, depth)
    return {"id": raw.example_id, "image": image, "label": label, "depth": depth}


# -------------------------------------------------------------------------- KITTI semantics

_KITTI_ARCHIVE = "data_semantics.zip (KITTI semantic segmentation benchmark)"
# split -> (folder of the zip, whether it has labels). The labelled 200 images evaluate, as in
# the paper; the unlabelled test images are the adaptation target.
_KITTI_SPLITS = {"train": ("testing", False), "validation": ("training", True)}


class KittiSemanticsFormat:
  """KITTI semantics: "validation" = training/ (labelled), "train" = testing/ (no labels)."""

  name = "kitti_semantics"
  label_space = labels.VKITTI_KITTI_10
  splits = ("train", "validation")
  has_depth = False

  def list_examples(self, manual_dir: str | os.PathLike, split: str) -> list[RawExample]:
    """`<folder>/image_2/*_10.png` (+ `semantic/` of the same name when labelled)."""
    _check_split(self.name, split, self.splits)
    folder, labelled = _KITTI_SPLITS[split]
    image_dir = _locate(pathlib.Path(manual_dir), f"{folder}/image_2", _KITTI_ARCHIVE)
    label_dir = image_dir.parent / "semantic"
    if labelled and not label_dir.is_dir():
      raise DataError(f"folder {label_dir} is missing; it comes from {_KITTI_ARCHIVE}: "
                      "re-extract it")
    examples = [
        RawExample(example_id=f"{folder}/{image_path.stem}", image_path=image_path,
                   label_path=(_check_partner(image_path, label_dir / image_path.name, "label",
                                              _KITTI_ARCHIVE) if labelled else None),
                   depth_path=None)
        for image_path in _sorted_files(image_dir, "*_10.png")]
    return _check_not_empty(examples, self.name, split, image_dir)

  def read_example(self, raw: RawExample) -> dict:
    """Image (size varies per image) and its 10-class label; all 255 when unlabelled."""
    image = _read_rgb(raw.image_path)
    if raw.label_path is None:
      label = np.full(image.shape[:2], IGNORE_LABEL, np.uint8)
    else:
      label_ids = _read_label_ids(raw.label_path)
      _check_same_size(raw.image_path, image, raw.label_path, label_ids)
      label = _map_ids(label_ids, labels.kitti_label_id_to_10_lut(),
                       labels.CITYSCAPES_MAX_LABEL_ID, raw.label_path)
    return {"id": raw.example_id, "image": image, "label": label}


# ------------------------------------------------------------------- SYNTHIA-RAND-CITYSCAPES

_SYNTHIA_ARCHIVE = "SYNTHIA_RAND_CITYSCAPES.rar"


class SynthiaRandCityscapesFormat:
  """SYNTHIA-RAND-CITYSCAPES: RGB/, GT/LABELS/ (16-bit, class id in R), Depth/ (16-bit cm)."""

  name = "synthia_rand_cityscapes"
  label_space = labels.SYNTHIA_CITYSCAPES_16
  splits = ("train",)
  has_depth = True

  def list_examples(self, manual_dir: str | os.PathLike, split: str) -> list[RawExample]:
    """Every `RGB/*.png` with `GT/LABELS/` and `Depth/` (or `Depth/Depth/`) of the same name."""
    _check_split(self.name, split, self.splits)
    image_dir = _locate(pathlib.Path(manual_dir), "RGB", _SYNTHIA_ARCHIVE)
    root = image_dir.parent
    label_dir = root / "GT" / "LABELS"
    depth_dir = root / "Depth"
    if (depth_dir / "Depth").is_dir():  # Some extractions nest the depth folder.
      depth_dir = depth_dir / "Depth"
    for folder in (label_dir, depth_dir):
      if not folder.is_dir():
        raise DataError(f"folder {folder} is missing next to {image_dir}; it comes from "
                        f"{_SYNTHIA_ARCHIVE}: re-extract it")
    examples = [
        RawExample(example_id=image_path.stem, image_path=image_path,
                   label_path=_check_partner(image_path, label_dir / image_path.name, "label",
                                             _SYNTHIA_ARCHIVE),
                   depth_path=_check_partner(image_path, depth_dir / image_path.name, "depth",
                                             _SYNTHIA_ARCHIVE))
        for image_path in _sorted_files(image_dir, "*.png")]
    return _check_not_empty(examples, self.name, split, image_dir)

  def read_example(self, raw: RawExample) -> dict:
    """Image, 16-class label from the label PNG's first channel, depth (first channel, cm) with
    the sky at the far clip."""
    image = _read_rgb(raw.image_path)
    class_ids = _read_png_channels(raw.label_path)[..., 0]
    _check_same_size(raw.image_path, image, raw.label_path, class_ids)
    label = _map_ids(class_ids, labels.synthia_id_to_16_lut(), labels.SYNTHIA_MAX_ID,
                     raw.label_path)
    depth = _read_png_channels(raw.depth_path)[..., 0].astype(np.uint16)
    _check_same_size(raw.image_path, image, raw.depth_path, depth)
    depth[label == self.label_space.class_names.index("sky")] = FAR_DEPTH_CM
    return {"id": raw.example_id, "image": image, "label": label, "depth": depth}


# ------------------------------------------------------------------------------- Cityscapes

_CITYSCAPES_ARCHIVES = {"leftImg8bit": "leftImg8bit_trainvaltest.zip",
                        "gtFine": "gtFine_trainvaltest.zip"}
_CITYSCAPES_SPLIT_FOLDERS = {"train": "train", "validation": "val"}


class CityscapesFormat:
  """Cityscapes fine annotations: "train" and "validation" (val), labels in the 16 classes."""

  name = "cityscapes"
  label_space = labels.SYNTHIA_CITYSCAPES_16
  splits = ("train", "validation")
  has_depth = False

  def list_examples(self, manual_dir: str | os.PathLike, split: str) -> list[RawExample]:
    """`leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png` + `gtFine/..._gtFine_labelIds.png`."""
    _check_split(self.name, split, self.splits)
    folder = _CITYSCAPES_SPLIT_FOLDERS[split]
    manual_dir = pathlib.Path(manual_dir)
    image_root = _locate(manual_dir, f"leftImg8bit/{folder}", _CITYSCAPES_ARCHIVES["leftImg8bit"])
    label_root = _locate(manual_dir, f"gtFine/{folder}", _CITYSCAPES_ARCHIVES["gtFine"])
    examples = []
    for image_path in _sorted_files(image_root, "*/*_leftImg8bit.png"):
      city = image_path.parent.name
      stem = image_path.name.removesuffix("_leftImg8bit.png")
      label_path = label_root / city / f"{stem}_gtFine_labelIds.png"
      examples.append(RawExample(
          example_id=f"{folder}/{city}/{stem}", image_path=image_path,
          label_path=_check_partner(image_path, label_path, "label",
                                    _CITYSCAPES_ARCHIVES["gtFine"]),
          depth_path=None))
    return _check_not_empty(examples, self.name, split, image_root)

  def read_example(self, raw: RawExample) -> dict:
    """Image and its labelIds mapped to the 16 classes."""
    image = _read_rgb(raw.image_path)
    label_ids = _read_label_ids(raw.label_path)
    _check_same_size(raw.image_path, image, raw.label_path, label_ids)
    label = _map_ids(label_ids, labels.cityscapes_label_id_to_16_lut(),
                     labels.CITYSCAPES_MAX_LABEL_ID, raw.label_path)
    return {"id": raw.example_id, "image": image, "label": label}


FORMATS: dict[str, DatasetFormat] = {
    format_.name: format_ for format_ in (VirtualKittiFormat(), KittiSemanticsFormat(),
                                          SynthiaRandCityscapesFormat(), CityscapesFormat())
}
