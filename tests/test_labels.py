"""Class tables (gio_ada_jax/data/labels.py) against the datasets' documentation.

The expected tables are typed out by hand in tests/reference_tables.py (sources named there),
never taken from labels.py, which builds its Cityscapes tables from the cityscapesscripts
package.
"""

import re

import numpy as np
import pytest

from gio_ada_jax.data import labels
from tests import reference_tables as ref

IGNORE = ref.IGNORE


def test_ignore_label_is_255():
  assert labels.IGNORE_LABEL == 255


# ------------------------------------------------------------- the reference, checked itself


def test_reference_19_classes_are_the_labels_with_a_train_id():
  """The hand-typed 19-class tables agree with the hand-typed labels.py listing."""
  with_train_id = sorted((t, i, n, c) for n, i, t, c in ref.CITYSCAPES_LABELS if 0 <= t < 255)
  assert [n for _, _, n, _ in with_train_id] == list(ref.CITYSCAPES_19_NAMES)
  assert {i: t for t, i, _, _ in with_train_id} == ref.CITYSCAPES_LABEL_ID_TO_19
  assert {n: c for _, _, n, c in with_train_id} == ref.CITYSCAPES_COLOURS
  assert max(i for _, i, _, _ in ref.CITYSCAPES_LABELS) == ref.CITYSCAPES_MAX_LABEL_ID


def test_reference_16_and_10_class_ids_name_the_same_classes():
  """Each labelId / SYNTHIA id maps to the class of its own name in the hand-typed tables."""
  name_of_id = {i: n for n, i, _, _ in ref.CITYSCAPES_LABELS}
  for label_id, index in ref.CITYSCAPES_LABEL_ID_TO_16.items():
    assert ref.SYNTHIA_CITYSCAPES_16_NAMES[index] == name_of_id[label_id]
  for label_id, index in ref.KITTI_LABEL_ID_TO_10.items():
    assert ref.VKITTI_KITTI_10_NAMES[index] == name_of_id[label_id]
  synthia_to_cityscapes = {"pedestrian": "person"}
  for synthia_id, index in ref.SYNTHIA_ID_TO_16.items():
    name = ref.SYNTHIA_CLASSES[synthia_id].lower()
    assert ref.SYNTHIA_CITYSCAPES_16_NAMES[index] == synthia_to_cityscapes.get(name, name)
  vkitti_to_cityscapes = {"TrafficLight": "traffic light", "TrafficSign": "traffic sign",
                          "Tree": "vegetation", "Van": "car"}
  for name, index in ref.VKITTI_NAME_TO_10.items():
    if index != IGNORE:
      want = vkitti_to_cityscapes.get(name, name.lower())
      assert ref.VKITTI_KITTI_10_NAMES[index] == want


# ----------------------------------------------------------------------- label spaces, LUTs


@pytest.mark.parametrize("space, names, starred", [
    (labels.CITYSCAPES_19, ref.CITYSCAPES_19_NAMES, ()),
    (labels.SYNTHIA_CITYSCAPES_16, ref.SYNTHIA_CITYSCAPES_16_NAMES, ref.MIOU13_CLASSES),
    (labels.VKITTI_KITTI_10, ref.VKITTI_KITTI_10_NAMES, ()),
])
def test_label_spaces_names_colours_and_starred_classes(space, names, starred):
  assert space.class_names == names
  assert space.num_classes == len(names)
  assert space.colours == tuple(ref.CITYSCAPES_COLOURS[name] for name in names)
  assert space.starred_classes == starred
  assert labels.label_space_for(len(names)) is space
  palette = space.palette()
  np.testing.assert_array_equal(palette[:len(names)], [ref.CITYSCAPES_COLOURS[n] for n in names])
  assert not palette[len(names):].any()


def test_miou13_classes_and_max_ids():
  assert labels.MIOU13_CLASSES == ref.MIOU13_CLASSES
  assert labels.CITYSCAPES_MAX_LABEL_ID == ref.CITYSCAPES_MAX_LABEL_ID
  assert labels.SYNTHIA_MAX_ID == ref.SYNTHIA_MAX_ID


@pytest.mark.parametrize("build, reference", [
    (labels.cityscapes_label_id_to_train_id_lut, ref.CITYSCAPES_LABEL_ID_TO_19),
    (labels.cityscapes_label_id_to_16_lut, ref.CITYSCAPES_LABEL_ID_TO_16),
    (labels.synthia_id_to_16_lut, ref.SYNTHIA_ID_TO_16),
    (labels.kitti_label_id_to_10_lut, ref.KITTI_LABEL_ID_TO_10),
])
def test_luts_match_reference_tables(build, reference):
  lut = build()
  assert lut.shape == (256,)
  np.testing.assert_array_equal(lut, ref.lut(reference))  # also checks the uint8 values


def test_vkitti_name_table_is_the_reference():
  assert labels.VKITTI_NAME_TO_10 == ref.VKITTI_NAME_TO_10


# ---------------------------------------------------------------------------------- decisions


def test_decision_van_is_car_caravan_and_trailer_are_ignored():
  assert labels.VKITTI_NAME_TO_10["Van"] == labels.VKITTI_NAME_TO_10["Car"] == 8  # car
  lut = labels.kitti_label_id_to_10_lut()
  assert lut[26] == 8
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
  assert labels.VKITTI_NAME_TO_10["Tree"] == labels.VKITTI_NAME_TO_10["Vegetation"] == 5


def test_every_10_class_exists_on_both_sides():
  source = {c for c in labels.VKITTI_NAME_TO_10.values() if c != IGNORE}
  target = {int(c) for c in labels.kitti_label_id_to_10_lut() if c != IGNORE}
  assert source == target == set(range(10))


def test_synthia_ids_without_counterpart_are_ignored():
  lut = labels.synthia_id_to_16_lut()
  for synthia_id in (0, 13, 14, 16, 18, 20, 22):  # void, parking, road-work, terrain, truck, ...
    assert lut[synthia_id] == IGNORE


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
