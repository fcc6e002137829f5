"""Every class table of the project: benchmark label spaces, names, colours, raw-encoding LUTs.

Labels inside the project are uint8 class indices of a benchmark's label space, 255 = ignore.
Raw encodings are translated by lookup tables built here:

- Cityscapes / KITTI labelIds (uint8 PNGs, 0..33) -> 19 Cityscapes trainIds, the 16 SYNTHIA
  classes or the 10 Virtual KITTI classes: 256-entry uint8 arrays, `lut[label_id]`.
- SYNTHIA class ids (first channel of a 16-bit PNG, 0..22) -> the 16 classes: 256-entry uint8
  array; callers check `ids <= SYNTHIA_MAX_ID` before indexing, as the PNG holds uint16 values.
- Virtual KITTI colours (1.3.1 `*_scenegt_rgb_encoding.txt`, 2.0.3 `colors.txt`) -> the 10
  classes: a dict {packed rgb: class index} parsed from the file of the same world/variation,
  applied by `rgb_to_class`.

The Cityscapes table itself comes from the `cityscapesscripts` package (its labels.py is plain
namedtuples: no I/O, no GUI); the 16- and 10-class spaces are subsets of its 19 trainIds, so a
labelId maps to a subset class exactly when the official benchmark counts it as that trainId.

Label decisions (README-ready; see also the docstring of `VKITTI_NAME_TO_10`):
  Principle: a raw class is ignored (255) on one side when it has no counterpart among the
  other side's classes of the benchmark, and both sides follow Cityscapes' class definitions.
  * Van (Virtual KITTI) -> car. Cityscapes, whose labelling rules KITTI semantics follows,
    defines car as "cars, jeeps, SUVs, vans with a continuous body shape"; Virtual KITTI's vans
    are such vans, so KITTI annotates them as car (labelId 26).
  * KITTI caravan (29) and trailer (30) -> ignore: Cityscapes keeps them apart from car (living
    quarters / trailers, ignored in its evaluation) and Virtual KITTI has neither.
  * GuardRail (Virtual KITTI) and guard rail (KITTI labelId 14) -> ignore on both sides: not
    one of the 10 classes (the paper's Table 1 has no fence/guard-rail column).
  * Misc (Virtual KITTI 1.3.1 and 2.0.3) and Undefined (2.0.3, colour 0 0 0) -> ignore: no
    target class; KITTI's void classes (0-6) are ignored likewise.
  * Cityscapes/KITTI polegroup (labelId 18) -> ignore, as in the official labelId->trainId
    table (ignoreInEval). Keeping every benchmark's table a restriction of that official table
    makes KITTI and Cityscapes scores comparable with published ones; polegroup pixels are rare.
  * Tree and Vegetation (Virtual KITTI) -> vegetation (KITTI labelId 21).
  * SYNTHIA ids without a 16-class counterpart (0 void, 13 parking-slot, 14 road-work,
    16 terrain, 18 truck, 20 train, 22 lanemarking) -> ignore; ids above 22 are an error.
    On Cityscapes, terrain (22), truck (27) and train (31) are ignored in the 16-class space.
"""

import dataclasses
from collections.abc import Mapping

import numpy as np
from cityscapesscripts.helpers import labels as cityscapes_labels

IGNORE_LABEL = 255
LUT_SIZE = 256  # Every id LUT covers all uint8 values.


@dataclasses.dataclass(frozen=True)
class LabelSpace:
  """A benchmark's classes in the order of the paper's tables, with a colour each for pictures."""

  name: str
  class_names: tuple[str, ...]
  colours: tuple[tuple[int, int, int], ...]  # RGB, Cityscapes palette
  # Classes of a second mean reported beside mIoU (mIoU* of Table 4); empty: none.
  starred_classes: tuple[int, ...] = ()

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def palette(self) -> np.ndarray:
    """[256, 3] uint8 colour lookup; ignore (and unused ids) are black."""
    table = np.zeros((256, 3), np.uint8)
    table[:self.num_classes] = np.asarray(self.colours, np.uint8)
    return table


# Virtual KITTI <-> KITTI, the paper's Table 1 column order (Cityscapes colours).
VKITTI_KITTI_10 = LabelSpace(
    name="vkitti_kitti_10",
    class_names=("road", "building", "pole", "traffic light", "traffic sign", "vegetation",
                 "terrain", "sky", "car", "truck"),
    colours=((128, 64, 128), (70, 70, 70), (153, 153, 153), (250, 170, 30), (220, 220, 0),
             (107, 142, 35), (152, 251, 152), (70, 130, 180), (0, 0, 142), (0, 0, 70)),
)

# ------------------------------------------------------------------------------ Cityscapes

# The official labels with a trainId, in trainId order (cityscapesscripts' helpers/labels.py).
_CITYSCAPES_TRAIN_LABELS = tuple(sorted(
    (label for label in cityscapes_labels.labels if 0 <= label.trainId < IGNORE_LABEL),
    key=lambda label: label.trainId))
# The largest labelId a ground-truth PNG may hold (33, bicycle); larger ids are bad input.
CITYSCAPES_MAX_LABEL_ID = max(label.id for label in cityscapes_labels.labels)

CITYSCAPES_19 = LabelSpace(
    name="cityscapes_19",
    class_names=tuple(label.name for label in _CITYSCAPES_TRAIN_LABELS),
    colours=tuple(tuple(label.color) for label in _CITYSCAPES_TRAIN_LABELS),
)

# Which Cityscapes trainIds each benchmark keeps, in its table order.
SYNTHIA_CITYSCAPES_16_TRAIN_IDS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
VKITTI_KITTI_10_TRAIN_IDS = (0, 2, 5, 6, 7, 8, 9, 10, 13, 14)


def _subspace(name: str, train_ids: tuple[int, ...]) -> LabelSpace:
  """The label space of some Cityscapes trainIds, with their names and colours."""
  return LabelSpace(name=name,
                    class_names=tuple(CITYSCAPES_19.class_names[i] for i in train_ids),
                    colours=tuple(CITYSCAPES_19.colours[i] for i in train_ids))


# mIoU* of Table 4: the 16 classes without wall, fence and pole (indices in the 16 space).
MIOU13_CLASSES = (0, 1, 2, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
# SYNTHIA <-> Cityscapes, the paper's Table 4 column order.
SYNTHIA_CITYSCAPES_16 = dataclasses.replace(
    _subspace("synthia_cityscapes_16", SYNTHIA_CITYSCAPES_16_TRAIN_IDS),
    starred_classes=MIOU13_CLASSES)


def label_space_for(num_classes: int) -> LabelSpace:
  """The benchmark label space with `num_classes` classes (10, 16 or 19)."""
  spaces = {s.num_classes: s for s in (VKITTI_KITTI_10, SYNTHIA_CITYSCAPES_16, CITYSCAPES_19)}
  if num_classes not in spaces:
    raise ValueError(f"model.num_classes={num_classes} matches no benchmark label space "
                     f"({sorted(spaces)}).")
  return spaces[num_classes]


def lut_from_mapping(mapping: Mapping[int, int]) -> np.ndarray:
  """A 256-entry uint8 LUT: `mapping[id]` where given, 255 (ignore) elsewhere."""
  lut = np.full(LUT_SIZE, IGNORE_LABEL, np.uint8)
  for raw_id, class_index in mapping.items():
    lut[raw_id] = class_index
  return lut


def cityscapes_label_id_to_train_id_lut() -> np.ndarray:
  """Cityscapes/KITTI labelId -> 19 trainIds (the official table; others 255)."""
  return lut_from_mapping({label.id: label.trainId for label in _CITYSCAPES_TRAIN_LABELS})


def _label_id_to_subspace_lut(train_ids: tuple[int, ...]) -> np.ndarray:
  """labelId -> position of its trainId in `train_ids` (255 for the other trainIds)."""
  train_id_to_subspace = lut_from_mapping({t: i for i, t in enumerate(train_ids)})
  return train_id_to_subspace[cityscapes_label_id_to_train_id_lut()]


def cityscapes_label_id_to_16_lut() -> np.ndarray:
  """Cityscapes labelId -> SYNTHIA_CITYSCAPES_16 (terrain, truck, train and voids -> 255)."""
  return _label_id_to_subspace_lut(SYNTHIA_CITYSCAPES_16_TRAIN_IDS)


def kitti_label_id_to_10_lut() -> np.ndarray:
  """KITTI (Cityscapes) labelId -> VKITTI_KITTI_10; 18 polegroup, 29 caravan -> 255."""
  return _label_id_to_subspace_lut(VKITTI_KITTI_10_TRAIN_IDS)


# --------------------------------------------------------------------------------- SYNTHIA

SYNTHIA_MAX_ID = 22  # Lanemarking; the README's table stops there.
# SYNTHIA-RAND-CITYSCAPES README class id -> SYNTHIA_CITYSCAPES_16 (DADA's 16-class table).
_SYNTHIA_ID_TO_16 = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 9, 10: 10,
                     17: 11, 8: 12, 19: 13, 12: 14, 11: 15}


def synthia_id_to_16_lut() -> np.ndarray:
  """SYNTHIA class id -> SYNTHIA_CITYSCAPES_16. Check ids <= SYNTHIA_MAX_ID before indexing."""
  return lut_from_mapping(_SYNTHIA_ID_TO_16)


# ---------------------------------------------------------------------------- Virtual KITTI

# Virtual KITTI class name (1.3.1 and 2.0.3 spelling) -> VKITTI_KITTI_10 index. Van -> car
# and GuardRail, Misc, Undefined -> ignore: see the decisions in the module docstring.
VKITTI_NAME_TO_10 = {
    "Road": 0, "Building": 1, "Pole": 2, "TrafficLight": 3, "TrafficSign": 4, "Tree": 5,
    "Vegetation": 5, "Terrain": 6, "Sky": 7, "Car": 8, "Van": 8, "Truck": 9,
    "GuardRail": IGNORE_LABEL, "Misc": IGNORE_LABEL, "Undefined": IGNORE_LABEL,
}


class EncodingError(ValueError):
  """A Virtual KITTI colour table that cannot be parsed; names the file and the line."""


def pack_rgb(image_rgb: np.ndarray) -> np.ndarray:
  """[..., 3] uint8 -> [...] uint32 `r << 16 | g << 8 | b`."""
  rgb = np.asarray(image_rgb).astype(np.uint32)
  return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def unpack_rgb(packed: int) -> tuple[int, int, int]:
  """`r << 16 | g << 8 | b` -> (r, g, b)."""
  return (packed >> 16) & 255, (packed >> 8) & 255, packed & 255


def _parse_colour_line(line: str, where: str) -> tuple[str, int]:
  """`Name[:trackId] r g b` -> (Name, packed rgb)."""
  fields = line.split()
  if len(fields) != 4:
    raise EncodingError(f"{where}: expected 'Name[:trackId] r g b', got {line!r}")
  name = fields[0].split(":")[0]
  try:
    rgb = [int(value) for value in fields[1:]]
  except ValueError:
    raise EncodingError(f"{where}: colour values must be integers, got {line!r}") from None
  if not all(0 <= value <= 255 for value in rgb):
    raise EncodingError(f"{where}: colour values must be in 0..255, got {line!r}")
  return name, (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]


def parse_vkitti_colour_table(text: str, source: str) -> dict[int, int]:
  """A Virtual KITTI colour table -> {packed rgb: VKITTI_KITTI_10 index (255 = ignore)}.

  Reads both 1.3.1 `<world>_<variation>_scenegt_rgb_encoding.txt` (header `Category(:id) r g b`,
  per-instance `Car:<trackId>` / `Van:<trackId>` colours) and 2.0.3 `colors.txt` (header
  `Category r g b`, one colour per class). `source` names the file in error messages. Raises
  EncodingError on an unknown class name, a malformed line, or a colour given two classes.
  """
  table: dict[int, int] = {}
  for line_number, line in enumerate(text.splitlines(), start=1):
    if not line.strip() or (line_number == 1 and line.lstrip().startswith("Category")):
      continue
    where = f"{source}, line {line_number}"
    name, packed = _parse_colour_line(line, where)
    if name not in VKITTI_NAME_TO_10:
      raise EncodingError(f"{where}: unknown Virtual KITTI class {name!r}; known classes: "
                          f"{', '.join(sorted(VKITTI_NAME_TO_10))}")
    class_index = VKITTI_NAME_TO_10[name]
    if table.get(packed, class_index) != class_index:
      raise EncodingError(f"{where}: colour {unpack_rgb(packed)} already belongs to another class")
    table[packed] = class_index
  return table


def rgb_to_class(image_rgb: np.ndarray,
                 lut: Mapping[int, int]) -> tuple[np.ndarray, dict[int, int]]:
  """Colour-coded labels [H, W, 3] uint8 -> (classes [H, W] uint8, {unknown packed rgb: pixels}).

  Pixels whose colour is not in `lut` become 255 and are counted in the second result, so that
  callers can report them.
  """
  packed = pack_rgb(image_rgb)
  keys = np.asarray(sorted(lut), np.uint32)
  values = np.asarray([lut[key] for key in keys.tolist()], np.uint8)
  if keys.size == 0:
    found = np.zeros(packed.shape, bool)
    classes = np.full(packed.shape, IGNORE_LABEL, np.uint8)
  else:
    position = np.minimum(np.searchsorted(keys, packed), keys.size - 1)
    found = keys[position] == packed
    classes = np.where(found, values[position], np.uint8(IGNORE_LABEL)).astype(np.uint8)
  unknown_colours, counts = np.unique(packed[~found], return_counts=True)
  return classes, dict(zip(unknown_colours.tolist(), counts.tolist()))
