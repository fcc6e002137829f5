"""Tiny fake dataset trees in each official on-disk format, for reader and builder tests.

Every `write_*` function writes into `root` and returns what `gio_ada_jax.data.formats` should
read back: {split: {example_id: {"image", "label"[, "depth"]}}} with arrays as the reader gives
them (label-space indices, 255 ignore; depth uint16 cm, 0 invalid). Sizes are (height, width).
Label expectations go through the hand-typed documentation tables of tests/reference_tables.py,
independent of `gio_ada_jax.data.labels`.

SYNTHIA files are 16-bit multi-channel PNGs that only TensorFlow writes here, so
`write_synthia` imports it.
"""

import pathlib

import numpy as np
from PIL import Image

from tests import reference_tables as ref

Expected = dict[str, dict[str, dict[str, np.ndarray]]]
Size = tuple[int, int]

# The official colours and ids the fake files hold, and the classes expected back, come from the
# hand-typed tables of tests/reference_tables.py, never from gio_ada_jax.data.labels.
VKITTI_131_STATIC_COLOURS = ref.VKITTI_131_STATIC_COLOURS
VKITTI_203_COLOURS = ref.VKITTI_203_COLOURS
VKITTI_FAR_DEPTH = 65535


# ---------------------------------------------------------------------------------- helpers


def save_png(path: pathlib.Path, array: np.ndarray) -> pathlib.Path:
  """Writes an 8-bit (L/RGB) or 16-bit grayscale (I;16) array with PIL, creating folders."""
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(path)
  return path


def save_png16_channels(path: pathlib.Path, array: np.ndarray) -> pathlib.Path:
  """Writes a uint16 [H, W, C] PNG (what PIL cannot) with TensorFlow."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(tf.io.encode_png(tf.constant(array, tf.uint16)).numpy())
  return path


def random_image(rng: np.random.Generator, size: Size) -> np.ndarray:
  return rng.integers(0, 256, (*size, 3), dtype=np.uint8)


def random_vkitti_depth(rng: np.random.Generator, size: Size) -> tuple[np.ndarray, np.ndarray]:
  """(stored depth with some far-clip and zero pixels, what the reader returns: the same)."""
  stored = rng.integers(1, VKITTI_FAR_DEPTH, size, dtype=np.uint16)
  stored.flat[0] = VKITTI_FAR_DEPTH
  stored.flat[1] = 0
  return stored, stored.copy()


def paint_classes(rng: np.random.Generator, size: Size,
                  entries: list[tuple[str, tuple[int, int, int]]]) -> tuple[np.ndarray, np.ndarray]:
  """A colour label image using every (class name, colour) entry, and its 10-class labels."""
  choice = rng.permutation(np.resize(np.arange(len(entries)), size[0] * size[1])).reshape(size)
  colours = np.asarray([colour for _, colour in entries], np.uint8)[choice]
  classes = np.asarray([ref.VKITTI_NAME_TO_10[name] for name, _ in entries], np.uint8)[choice]
  return colours, classes


def instance_colours(rng: np.random.Generator, count: int,
                     taken: set[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
  """`count` random colours not in `taken` (which is extended with them)."""
  colours = []
  while len(colours) < count:
    colour = tuple(int(value) for value in rng.integers(0, 256, 3))
    if colour not in taken:
      taken.add(colour)
      colours.append(colour)
  return colours


def encoding_text(header: str, entries: list[tuple[str, tuple[int, int, int]]]) -> str:
  lines = [header] + [f"{name} {r} {g} {b}" for name, (r, g, b) in entries]
  return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- Virtual KITTI


def write_vkitti_131(root: pathlib.Path, worlds=("0001",), variations=("clone",), frames: int = 2,
                     size: Size = (12, 20), seed: int = 0, instances: int = 2) -> Expected:
  """`vkitti_1.3.1_{rgb,scenegt,depthgt}` with an encoding file per world/variation.

  Car and Van get `instances` colours each, different in every encoding file, as in the real
  files (`Car:<trackId> r g b`).
  """
  rng = np.random.default_rng(seed)
  root = pathlib.Path(root)
  expected = {}
  taken = set(VKITTI_131_STATIC_COLOURS.values())
  for world in worlds:
    for variation in variations:
      entries = list(VKITTI_131_STATIC_COLOURS.items())
      for name in ("Car", "Van"):
        entries += [(f"{name}:{track}", colour)
                    for track, colour in enumerate(instance_colours(rng, instances, taken))]
      scenegt = root / "vkitti_1.3.1_scenegt"
      scenegt.mkdir(parents=True, exist_ok=True)
      (scenegt / f"{world}_{variation}_scenegt_rgb_encoding.txt").write_text(
          encoding_text("Category(:id) r g b", entries))
      named = [(name.split(":")[0], colour) for name, colour in entries]
      for frame in range(frames):
        relative = pathlib.Path(world, variation, f"{frame:05d}.png")
        image = random_image(rng, size)
        colours, classes = paint_classes(rng, size, named)
        stored_depth, depth = random_vkitti_depth(rng, size)
        save_png(root / "vkitti_1.3.1_rgb" / relative, image)
        save_png(scenegt / relative, colours)
        save_png(root / "vkitti_1.3.1_depthgt" / relative, stored_depth)
        expected[f"{world}/{variation}/{frame:05d}"] = {
            "image": image, "label": classes, "depth": depth}
  return {"train": expected}


def write_vkitti_203(root: pathlib.Path, scenes=("Scene01",), variations=("clone",),
                     frames: int = 2, size: Size = (12, 20), seed: int = 0,
                     one_folder_per_tarball: bool = False,
                     class_folder: str = "classSegmentation") -> Expected:
  """`SceneXX/<variation>/frames/{rgb,depth,classSegmentation}/Camera_{0,1}` + `colors.txt`.

  With `one_folder_per_tarball`, each tarball's tree sits in its own top folder
  (`vkitti_2.0.3_rgb/Scene01/...`). RGB is JPEG, so the expected image is the decoded file.
  Camera_1 gets files too; readers must skip them.
  """
  rng = np.random.default_rng(seed)
  root = pathlib.Path(root)

  def top(tarball):
    return root / f"vkitti_2.0.3_{tarball}" if one_folder_per_tarball else root

  entries = list(VKITTI_203_COLOURS.items())
  expected = {}
  for scene in scenes:
    for variation in variations:
      textgt = top("textgt") / scene / variation
      textgt.mkdir(parents=True, exist_ok=True)
      (textgt / "colors.txt").write_text(encoding_text("Category r g b", entries))
      for camera in ("Camera_0", "Camera_1"):
        for frame in range(frames):
          frames_dir = pathlib.Path(scene, variation, "frames")
          image_path = top("rgb") / frames_dir / "rgb" / camera / f"rgb_{frame:05d}.jpg"
          image_path.parent.mkdir(parents=True, exist_ok=True)
          Image.fromarray(random_image(rng, size)).save(image_path, quality=95)
          colours, classes = paint_classes(rng, size, entries)
          stored_depth, depth = random_vkitti_depth(rng, size)
          save_png(top("classSegmentation") / frames_dir / class_folder / camera /
                   f"classgt_{frame:05d}.png", colours)
          save_png(top("depth") / frames_dir / "depth" / camera / f"depth_{frame:05d}.png",
                   stored_depth)
          if camera == "Camera_0":
            expected[f"{scene}/{variation}/{frame:05d}"] = {
                "image": np.asarray(Image.open(image_path).convert("RGB")), "label": classes,
                "depth": depth}
  return {"train": expected}


# -------------------------------------------------------------------------- KITTI semantics


def write_kitti_semantics(root: pathlib.Path, train_sizes=((12, 20), (13, 22)),
                          validation_sizes=((12, 20), (11, 19)), seed: int = 0) -> Expected:
  """`training/{image_2,semantic}/NNNNNN_10.png` and `testing/image_2/NNNNNN_10.png`.

  One image per size, so sizes differ within a split as in KITTI. Semantic PNGs hold every
  Cityscapes labelId 0..33.
  """
  rng = np.random.default_rng(seed)
  root = pathlib.Path(root)
  lut = ref.lut(ref.KITTI_LABEL_ID_TO_10)
  expected = {"train": {}, "validation": {}}
  for index, size in enumerate(train_sizes):
    image = random_image(rng, size)
    save_png(root / "testing" / "image_2" / f"{index:06d}_10.png", image)
    expected["train"][f"testing/{index:06d}_10"] = {
        "image": image, "label": np.full(size, ref.IGNORE, np.uint8)}
  for index, size in enumerate(validation_sizes):
    name = f"{index:06d}_10.png"
    image = random_image(rng, size)
    label_ids = every_id_image(rng, size, ref.CITYSCAPES_MAX_LABEL_ID)
    save_png(root / "training" / "image_2" / name, image)
    save_png(root / "training" / "semantic" / name, label_ids)
    expected["validation"][f"training/{index:06d}_10"] = {"image": image, "label": lut[label_ids]}
  return expected


def every_id_image(rng: np.random.Generator, size: Size, max_id: int,
                   dtype=np.uint8) -> np.ndarray:
  """Ids 0..max_id in random places, each at least once when the image is large enough."""
  ids = np.resize(np.arange(max_id + 1, dtype=dtype), size[0] * size[1])
  return rng.permutation(ids).reshape(size)


# ------------------------------------------------------------------- SYNTHIA-RAND-CITYSCAPES


def write_synthia(root: pathlib.Path, frames: int = 2, size: Size = (12, 20), seed: int = 0,
                  nested_depth: bool = False, top: str = "") -> Expected:
  """`[top/]RGB/NNNNNNN.png`, `GT/LABELS/` (uint16 x3: class id, instance id, 0), `Depth/`.

  Depth is a uint16 three-channel PNG with the centimetres in every channel; with
  `nested_depth` it sits in `Depth/Depth/`.
  """
  rng = np.random.default_rng(seed)
  base = pathlib.Path(root) / top
  depth_dir = base / "Depth" / "Depth" if nested_depth else base / "Depth"
  lut = ref.lut(ref.SYNTHIA_ID_TO_16)
  expected = {}
  for frame in range(frames):
    name = f"{frame:07d}.png"
    image = random_image(rng, size)
    class_ids = every_id_image(rng, size, ref.SYNTHIA_MAX_ID, np.uint16)
    instance_ids = rng.integers(0, 1000, size, dtype=np.uint16)
    depth = rng.integers(0, 65536, size, dtype=np.uint16)
    save_png(base / "RGB" / name, image)
    save_png16_channels(base / "GT" / "LABELS" / name,
                        np.stack([class_ids, instance_ids, np.zeros_like(class_ids)], -1))
    save_png16_channels(depth_dir / name, np.stack([depth] * 3, -1))
    # SYNTHIA's README: class id 1 is the sky; the reader puts it at the far clip.
    expected[f"{frame:07d}"] = {"image": image, "label": lut[class_ids],
                                "depth": np.where(class_ids == 1, 65535, depth).astype(np.uint16)}
  return {"train": expected}


# ------------------------------------------------------------------------------- Cityscapes


def write_cityscapes(root: pathlib.Path, cities=None, frames: int = 2, size: Size = (12, 20),
                     seed: int = 0) -> Expected:
  """`leftImg8bit/{train,val}/<city>/<stem>_leftImg8bit.png` and `gtFine/.../<stem>_gtFine_*`.

  `cities` maps our split names to city folders; the colour and instance PNGs of gtFine are
  written too (with wrong contents), so readers must pick `_gtFine_labelIds.png`.
  """
  cities = cities or {"train": ("aachen", "bochum"), "validation": ("frankfurt",)}
  rng = np.random.default_rng(seed)
  root = pathlib.Path(root)
  lut = ref.lut(ref.CITYSCAPES_LABEL_ID_TO_16)
  expected = {}
  for split, split_cities in cities.items():
    folder = {"train": "train", "validation": "val"}[split]
    expected[split] = {}
    for city in split_cities:
      for frame in range(frames):
        stem = f"{city}_{frame:06d}_{19 + frame:06d}"
        image = random_image(rng, size)
        label_ids = every_id_image(rng, size, ref.CITYSCAPES_MAX_LABEL_ID)
        save_png(root / "leftImg8bit" / folder / city / f"{stem}_leftImg8bit.png", image)
        gt_dir = root / "gtFine" / folder / city
        save_png(gt_dir / f"{stem}_gtFine_labelIds.png", label_ids)
        save_png(gt_dir / f"{stem}_gtFine_color.png", random_image(rng, size))
        save_png(gt_dir / f"{stem}_gtFine_instanceIds.png",
                 rng.integers(0, 30000, size, dtype=np.uint16))
        expected[split][f"{folder}/{city}/{stem}"] = {"image": image, "label": lut[label_ids]}
  return expected
