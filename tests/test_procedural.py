"""The procedural sim-to-real scenes: determinism, exact geometry, label coverage, two looks."""

import numpy as np
import pytest
from PIL import Image

from configs.procedural import procedural_config
from gio_ada_jax.data import procedural
from gio_ada_jax.data.labels import VKITTI_KITTI_10

SKY = procedural.SKY


@pytest.fixture
def config():
  return procedural_config()


def _empty_scene(**primitives) -> procedural.Scene:
  """A straight road with no markings and only the given primitives."""
  road = procedural.Road(centre_x_m=-1.7, curvature=0.0, lane_width_m=3.4, parking_m=(0.0, 0.0),
                         sidewalk_m=(0.0, 0.0), has_markings=False, marking_width_m=0.15,
                         dash_length_m=3.0, dash_period_m=9.0)
  empty = lambda n: procedural.make_primitives([], [], [], n)  # noqa: E731
  return procedural.Scene(road=road, boxes=primitives.get("boxes", empty(6)),
                          cylinders=primitives.get("cylinders", empty(5)),
                          ellipsoids=primitives.get("ellipsoids", empty(6)))


def _high_frequency_energy(image: np.ndarray) -> float:
  """Mean squared difference of horizontally and vertically neighbouring pixels."""
  x = image.astype(np.float64)
  return float(np.mean(np.square(np.diff(x, axis=0))) + np.mean(np.square(np.diff(x, axis=1))))


def test_examples_are_deterministic_and_differ_by_index(config):
  first = procedural.generate_example(config, "target", "train", 3)
  again = procedural.generate_example(config, "target", "train", 3)
  other = procedural.generate_example(config, "target", "train", 4)
  validation = procedural.generate_example(config, "target", "validation", 3)
  for key in ("image", "label", "depth"):
    np.testing.assert_array_equal(first[key], again[key])
    assert not np.array_equal(first[key], other[key])
    assert not np.array_equal(first[key], validation[key])
  assert first["id"] == "target/train/000003"


@pytest.mark.parametrize("domain", procedural.DOMAINS)
def test_shapes_dtypes_labels_and_depth_validity(config, domain):
  example = procedural.generate_example(config, domain, "validation", 7)
  assert example["image"].shape == (128, 384, 3) and example["image"].dtype == np.uint8
  assert example["label"].shape == (128, 384) and example["label"].dtype == np.uint8
  assert example["depth"].shape == (128, 384) and example["depth"].dtype == np.uint16
  assert example["label"].max() < 10  # Every pixel has one of the 10 classes.
  sky = example["label"] == SKY
  assert sky.any() and np.all(example["depth"][sky] == 65535)  # the far clip, as VKITTI's sky
  assert np.all(example["depth"][~sky] > 0) and np.all(example["depth"][~sky] < 65535)


def test_road_depth_grows_towards_the_horizon(config):
  height, width, camera = 128, 384, config.camera
  labels, depth, normals, _ = procedural.render_geometry(_empty_scene(), height, width, camera)
  column = width // 2
  horizon = camera.horizon_row_fraction * height
  rows = np.arange(int(np.ceil(horizon)), height)
  assert np.all(labels[rows, column] == procedural.ROAD)
  assert np.all(np.diff(depth[rows, column]) < 0)  # Further up the image = further away.
  focal = procedural.focal_length_px(width, camera)
  np.testing.assert_allclose(depth[rows, column], camera.height_m * focal / (rows + 0.5 - horizon),
                             rtol=1e-5)
  np.testing.assert_allclose(normals[rows, column], [[0.0, 1.0, 0.0]] * len(rows))
  assert np.all(labels[:int(horizon)] == SKY) and np.all(depth[:int(horizon)] == 0)


def test_box_face_depth_is_its_distance(config):
  box = procedural.make_primitives([(-1.0, 1.0, 0.0, 3.0, 10.0, 12.0)], [procedural.TRUCK],
                                   [procedural.FIRST_PRIMITIVE_OBJECT], 6)
  labels, depth, normals, objects = procedural.render_geometry(_empty_scene(boxes=box), 128, 384,
                                                               config.camera)
  face = labels == procedural.TRUCK
  # 2 m wide at 10 m: about 2 f / 10 columns.
  focal = procedural.focal_length_px(384, config.camera)
  assert abs(face.any(axis=0).sum() - 2 * focal / 10) <= 1
  np.testing.assert_allclose(depth[face], 10.0, atol=0.01)
  np.testing.assert_array_equal(procedural.depth_to_centimetres(depth, labels)[face], 1000)
  np.testing.assert_allclose(normals[face], [[0.0, 0.0, -1.0]] * int(face.sum()))
  assert np.all(objects[face] == procedural.FIRST_PRIMITIVE_OBJECT)


def test_sphere_and_cylinder_depths(config):
  """A sphere straight ahead and a pole beside it: depth of their nearest points."""
  height_m = config.camera.height_m
  sphere = procedural.make_primitives([(0.0, height_m, 20.0, 2.0, 2.0, 2.0)],
                                      [procedural.VEGETATION], [8], 6)
  pole = procedural.make_primitives([(3.0, 15.0, 0.5, 0.0, 6.0)], [procedural.POLE], [9], 5)
  labels, depth, _, _ = procedural.render_geometry(
      _empty_scene(ellipsoids=sphere, cylinders=pole), 128, 384, config.camera)
  horizon_row = int(config.camera.horizon_row_fraction * 128)
  assert labels[horizon_row, 192] == procedural.VEGETATION
  np.testing.assert_allclose(depth[horizon_row, 191:193], 18.0, atol=0.01)
  pole_columns = np.flatnonzero(labels[horizon_row] == procedural.POLE)
  # The ray towards the pole's axis meets its surface 0.5 m early along that ray.
  assert abs(depth[horizon_row, pole_columns].min() - 15.0 * (1 - 0.5 / np.hypot(3.0, 15.0))) < 0.02


def test_paired_domains_share_geometry_but_not_appearance(config):
  config.target_scene_offset = 0
  source = procedural.generate_example(config, "source", "train", 11)
  target = procedural.generate_example(config, "target", "train", 11)
  np.testing.assert_array_equal(source["label"], target["label"])
  np.testing.assert_array_equal(source["depth"], target["depth"])
  assert np.mean(np.abs(source["image"].astype(int) - target["image"].astype(int))) > 10


def test_unpaired_by_default(config):
  source = procedural.generate_example(config, "source", "train", 11)
  target = procedural.generate_example(config, "target", "train", 11)
  assert not np.array_equal(source["label"], target["label"])


def _flat_fraction(image: np.ndarray, label: np.ndarray) -> float:
  """Fraction of same-label horizontal neighbours whose colours are identical."""
  same_label = label[:, 1:] == label[:, :-1]
  same_colour = np.all(image[:, 1:] == image[:, :-1], axis=-1)
  return float(np.mean(same_colour[same_label]))


def _edge_sharpness(image: np.ndarray, label: np.ndarray) -> float:
  """Share of the colour change across label boundaries (over 3 pixels) made in one step."""
  x = image.astype(np.float64)
  # Boundary between columns c and c + 1, for c in 1 .. W - 3.
  edges = label[:, 2:-1] != label[:, 1:-2]
  one_step = np.abs(x[:, 2:-1] - x[:, 1:-2]).sum(-1)[edges]
  three_steps = np.abs(x[:, 3:] - x[:, :-3]).sum(-1)[edges]
  return float(one_step.sum() / three_steps.sum())


def test_target_statistics_differ_from_source(config):
  config.target_scene_offset = 0
  for index in range(3):
    source = procedural.generate_example(config, "source", "train", index)
    target = procedural.generate_example(config, "target", "train", index)
    # Renderings are piecewise flat (one colour per face), photos are textured and noisy...
    assert len(np.unique(source["image"].reshape(-1, 3), axis=0)) < 1000
    assert len(np.unique(target["image"].reshape(-1, 3), axis=0)) > 5000
    assert _flat_fraction(source["image"], source["label"]) > 0.9
    assert _flat_fraction(target["image"], target["label"]) < 0.5
    # ...and blurred: at label boundaries the source jumps within one pixel, the target does not.
    assert _edge_sharpness(source["image"], source["label"]) > 0.9
    assert _edge_sharpness(target["image"], target["label"]) < 0.75


def test_every_class_appears_in_fifty_scenes(config):
  counts = np.zeros(10, np.int64)
  for index in range(50):
    scene = procedural.sample_scene(np.random.default_rng([0, 0, index, 0]), config.scene)
    labels = procedural.render_geometry(scene, 64, 192, config.camera)[0]
    counts += np.bincount(labels.ravel(), minlength=10)
  assert np.all(counts > 0), dict(zip(VKITTI_KITTI_10.class_names, counts))


def test_config_overrides_change_the_appearance(config):
  config.target.jpeg_step = 0.0
  config.target.noise_std = 0.0
  clean = procedural.generate_example(config, "target", "train", 5)["image"].astype(float)
  config.target.noise_std = 0.05
  noisy = procedural.generate_example(config, "target", "train", 5)["image"].astype(float)
  assert 0.035 * 255 < np.std(noisy - clean) < 0.06 * 255
  config.target.noise_std = 0.0
  config.target.blur_sigma_px = 2.0
  blurred = procedural.generate_example(config, "target", "train", 5)["image"]
  assert _high_frequency_energy(blurred) < 0.7 * _high_frequency_energy(clean)


def test_generate_examples_and_contact_sheet(config, tmp_path):
  config.height, config.width = 32, 96
  ids = [e["id"] for e in procedural.generate_examples(config, "source", "validation", 3)]
  assert ids == ["source/validation/000000", "source/validation/000001",
                 "source/validation/000002"]
  with pytest.raises(ValueError):
    procedural.generate_example(config, "real", "train", 0)
  path = tmp_path / "sheet.png"
  procedural.contact_sheet(config, 2, str(path))
  width, height = Image.open(path).size
  assert (width, height) == (6 * 96 + 5 * 2, 2 * 32 + 2)
