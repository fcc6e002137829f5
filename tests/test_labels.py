"""Class tables (gio_ada_jax/data/labels.py) against the reference notes (reference/datasets.md).

The reference tables below are typed from the notes, independently of labels.py, which builds
its Cityscapes tables from the cityscapesscripts package.
"""

import re

import numpy as np
import pytest

from gio_ada_jax.data import labels

IGNORE = labels.IGNORE_LABEL
# Cityscapes labelId -> trainId, name (datasets.md sec. 4).
CITYSCAPES_TRAIN_IDS = {
    7: (0, "road"), 8: (1, "sidewalk"), 11: (2, "building"), 12: (3, "wall"), 13: (4, "fence"),
    17: (5, "pole"), 19: (6, "traffic light"), 20: (7, "traffic sign"), 21: (8, "vegetation"),
    22: (9, "terrain"), 23: (10, "sky"), 24: (11, "person"), 25: (12, "rider"), 26: (13, "car"),
    27: (14, "truck"), 28: (15, "bus"), 31: (16, "train"), 32: (17, "motorcycle"),
    33: (18, "bicycle"),
}
# Cityscapes labelId -> 16 classes (DADA info16class.json label2train, datasets.md sec. 3).
CITYSCAPES_TO_16 = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 23: 9, 24: 10,
                    25: 11, 26: 12, 28: 13, 32: 14, 33: 15}
# SYNTHIA id -> 16 classes (DADA, datasets.md sec. 3).
SYNTHIA_TO_16 = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 9, 10: 10, 17: 11,
                 8: 12, 19: 13, 12: 14, 11: 15}
# KITTI labelId -> 10 classes (datasets.md sec. 5 table; polegroup 18 and caravan 29 ignored).
KITTI_TO_10 = {7: 0, 11: 1, 17: 2, 19: 3, 20: 4, 21: 5, 22: 6, 23: 7, 26: 8, 27: 9}


def expected_lut(mapping):
  return np.asarray([mapping.get(i, IGNORE) for i in range(256)], np.uint8)


# ----------------------------------------------------------------------- label spaces, LUTs


def test_cityscapes_19_names_and_colours():
  names = [name for _, name in sorted(CITYSCAPES_TRAIN_IDS.values())]
  assert labels.CITYSCAPES_19.class_names == tuple(names)
  assert labels.CITYSCAPES_19.colours[0] == (128, 64, 128)
  assert labels.CITYSCAPES_19.colours[13] == (0, 0, 142)
  assert labels.CITYSCAPES_19.colours[18] == (119, 11, 32)
  assert labels.CITYSCAPES_MAX_LABEL_ID == 33


def test_label_id_to_train_id_lut_is_the_official_table():
  reference = {label_id: train_id for label_id, (train_id, _) in CITYSCAPES_TRAIN_IDS.items()}
  lut = labels.cityscapes_label_id_to_train_id_lut()
  assert lut.dtype == np.uint8 and lut.shape == (256,)
  np.testing.assert_array_equal(lut, expected_lut(reference))


def test_synthia_cityscapes_16_space():
  space = labels.SYNTHIA_CITYSCAPES_16
  assert space.class_names == (
      "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
      "vegetation", "sky", "person", "rider", "car", "bus", "motorcycle", "bicycle")
  assert space.colours[9] == (70, 130, 180)  # sky
  assert space.colours[13] == (0, 60, 100)  # bus


def test_miou13_drops_wall_fence_pole():
  names = labels.SYNTHIA_CITYSCAPES_16.class_names
  assert labels.MIOU13_CLASSES == (0, 1, 2, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
  dropped = set(range(16)) - set(labels.MIOU13_CLASSES)
  assert sorted(names[i] for i in dropped) == ["fence", "pole", "wall"]


def test_vkitti_kitti_10_is_a_subset_of_cityscapes():
  train_ids = labels.VKITTI_KITTI_10_TRAIN_IDS
  assert labels.VKITTI_KITTI_10.class_names == tuple(
      labels.CITYSCAPES_19.class_names[t] for t in train_ids)
  assert labels.VKITTI_KITTI_10.colours == tuple(labels.CITYSCAPES_19.colours[t] for t in train_ids)


@pytest.mark.parametrize("build, reference", [
    (labels.cityscapes_label_id_to_16_lut, CITYSCAPES_TO_16),
    (labels.synthia_id_to_16_lut, SYNTHIA_TO_16),
    (labels.kitti_label_id_to_10_lut, KITTI_TO_10),
])
def test_luts_match_reference_tables(build, reference):
  lut = build()
  assert lut.dtype == np.uint8 and lut.shape == (256,)
  np.testing.assert_array_equal(lut, expected_lut(reference))


def test_16_class_names_agree_with_cityscapes_names():
  lut = labels.cityscapes_label_id_to_16_lut()
  for label_id, (_, name) in CITYSCAPES_TRAIN_IDS.items():
    if lut[label_id] != IGNORE:
      assert labels.SYNTHIA_CITYSCAPES_16.class_names[lut[label_id]] == name


# ---------------------------------------------------------------------------------- decisions


def test_decision_van_is_car_caravan_and_trailer_are_ignored():
  car = labels.VKITTI_KITTI_10.class_names.index("car")
  assert labels.VKITTI_NAME_TO_10["Van"] == car
  assert labels.VKITTI_NAME_TO_10["Car"] == car
  lut = labels.kitti_label_id_to_10_lut()
  assert lut[26] == car
  assert lut[29] == IGNORE and lut[30] == IGNORE  # caravan, trailer


def test_decision_guard_rail_misc_undefined_polegroup_are_ignored():
  for name in ("GuardRail", "Misc", "Undefined"):
    assert labels.VKITTI_NAME_TO_10[name] == IGNORE
  kitti = labels.kitti_label_id_to_10_lut()
  assert kitti[14] == IGNORE  # guard rail
  assert kitti[18] == IGNORE  # polegroup
  assert labels.cityscapes_label_id_to_16_lut()[18] == IGNORE
  assert labels.cityscapes_label_id_to_train_id_lut()[18] == IGNORE


def test_decision_tree_and_vegetation_are_vegetation():
  vegetation = labels.VKITTI_KITTI_10.class_names.index("vegetation")
  assert labels.VKITTI_NAME_TO_10["Tree"] == labels.VKITTI_NAME_TO_10["Vegetation"] == vegetation


def test_every_10_class_exists_on_both_sides():
  source = {c for c in labels.VKITTI_NAME_TO_10.values() if c != IGNORE}
  target = {int(c) for c in labels.kitti_label_id_to_10_lut() if c != IGNORE}
  assert source == target == set(range(10))


def test_synthia_ids_without_counterpart_are_ignored():
  lut = labels.synthia_id_to_16_lut()
  for synthia_id in (0, 13, 14, 16, 18, 20, 22):  # void, parking, road-work, terrain, truck, ...
    assert lut[synthia_id] == IGNORE
  assert labels.SYNTHIA_MAX_ID == 22


# ------------------------------------------------------------------- Virtual KITTI encodings

ENCODING_131 = """Category(:id) r g b
Terrain 210 0 200
Sky 90 200 255
GuardRail 255 100 255
Car:0 200 200 200
Car:1 12 34 56

Van:3 7 8 9
"""


def packed(r, g, b):
  return (r << 16) | (g << 8) | b


def test_parse_131_encoding_skips_header_and_strips_track_ids():
  table = labels.parse_vkitti_colour_table(ENCODING_131, "0001_clone_scenegt_rgb_encoding.txt")
  assert table == {packed(210, 0, 200): 6, packed(90, 200, 255): 7, packed(255, 100, 255): IGNORE,
                   packed(200, 200, 200): 8, packed(12, 34, 56): 8, packed(7, 8, 9): 8}


def test_parse_203_colors_txt():
  text = "Category r g b\nTerrain 210 0 200\nCar 255 127 80\nUndefined 0 0 0\nTree 0 199 0\n"
  table = labels.parse_vkitti_colour_table(text, "colors.txt")
  assert table == {packed(210, 0, 200): 6, packed(255, 127, 80): 8, 0: IGNORE,
                   packed(0, 199, 0): 5}


def test_instance_colours_of_two_files_differ():
  other = ENCODING_131.replace("Car:1 12 34 56", "Car:1 65 43 21")
  first = labels.parse_vkitti_colour_table(ENCODING_131, "a.txt")
  second = labels.parse_vkitti_colour_table(other, "b.txt")
  assert packed(12, 34, 56) in first and packed(12, 34, 56) not in second
  assert second[packed(65, 43, 21)] == 8


@pytest.mark.parametrize("bad_line, message", [
    ("Bridge 1 2 3", "unknown Virtual KITTI class 'Bridge'"),
    ("Car:4 1 2", "expected 'Name[:trackId] r g b'"),
    ("Car:4 1 2 x", "must be integers"),
    ("Car:4 1 2 300", "in 0..255"),
    ("Road 210 0 200", "already belongs to another class"),  # Terrain's colour
])
def test_bad_encoding_lines_name_file_and_line(bad_line, message):
  text = ENCODING_131 + bad_line + "\n"
  with pytest.raises(labels.EncodingError, match=re.escape(message)) as error:
    labels.parse_vkitti_colour_table(text, "/data/0001_fog_scenegt_rgb_encoding.txt")
  assert "/data/0001_fog_scenegt_rgb_encoding.txt, line 9" in str(error.value)


def test_rgb_to_class_maps_known_and_counts_unknown_colours():
  table = {packed(1, 2, 3): 0, packed(4, 5, 6): 9, packed(7, 8, 9): IGNORE}
  image = np.array([[[1, 2, 3], [4, 5, 6], [7, 8, 9]],
                    [[9, 9, 9], [9, 9, 9], [0, 0, 1]]], np.uint8)
  classes, unknown = labels.rgb_to_class(image, table)
  assert classes.dtype == np.uint8
  np.testing.assert_array_equal(classes, [[0, 9, IGNORE], [IGNORE, IGNORE, IGNORE]])
  assert unknown == {packed(9, 9, 9): 2, packed(0, 0, 1): 1}


def test_rgb_to_class_with_empty_table():
  classes, unknown = labels.rgb_to_class(np.zeros((2, 3, 3), np.uint8), {})
  np.testing.assert_array_equal(classes, np.full((2, 3), IGNORE))
  assert unknown == {0: 6}


def test_pack_and_unpack_rgb():
  assert labels.pack_rgb(np.array([255, 127, 80], np.uint8)) == packed(255, 127, 80)
  assert labels.unpack_rgb(packed(255, 127, 80)) == (255, 127, 80)
