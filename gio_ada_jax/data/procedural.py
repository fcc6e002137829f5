"""Procedural sim-to-real street scenes: the project's embedded default benchmark.

A scene is a handful of primitives (axis-aligned boxes, vertical cylinders, ellipsoids) on a flat
road plane, seen from a level car-mounted camera. `render_geometry` ray-casts it (vectorised over
pixels, one z-buffer) into exact labels in VKITTI_KITTI_10, z-depth in metres, normals and object
ids; `render_appearance` paints those in one of two looks, a flat synthetic one (source) and a
photo-like one (target). `generate_example` ties both to (seed, domain, split, index).

World frame: x right, y up, z forward (metres); the camera sits at (0, camera.height_m, 0) and
looks along +z. Each ray is parametrised with a unit z-component, so its parameter t *is* the
depth along the optical axis.
"""

import dataclasses
import signal
from typing import Iterator

import ml_collections
import numpy as np

from gio_ada_jax.data.formats import FAR_DEPTH_CM
from gio_ada_jax.data.labels import VKITTI_KITTI_10
from gio_ada_jax.images import depth_colours, panel, write_png

_CLASS = {name: index for index, name in enumerate(VKITTI_KITTI_10.class_names)}
ROAD, BUILDING, POLE = _CLASS["road"], _CLASS["building"], _CLASS["pole"]
TRAFFIC_LIGHT, TRAFFIC_SIGN = _CLASS["traffic light"], _CLASS["traffic sign"]
VEGETATION, TERRAIN, SKY = _CLASS["vegetation"], _CLASS["terrain"], _CLASS["sky"]
CAR, TRUCK = _CLASS["car"], _CLASS["truck"]

# Object ids: 0 is the sky, 1..4 the ground's materials, primitives' objects count up from 8.
SKY_OBJECT, ROAD_OBJECT, MARKING_OBJECT, SIDEWALK_OBJECT, TERRAIN_OBJECT = 0, 1, 2, 3, 4
FIRST_PRIMITIVE_OBJECT = 8

DOMAINS = ("source", "target")
SPLIT_CODES = {"train": 0, "validation": 1}
# Vehicle model heights, shared with the appearance (windows and wheels are painted darker):
# car bodies span CAR_BODY_BOTTOM_M..<= GLASS_HEIGHT_M, their cabins start below GLASS_HEIGHT_M;
# below the body (or a truck's cab) only the wheels show.
GLASS_HEIGHT_M = 1.0
CAR_BODY_BOTTOM_M = 0.3
TRUCK_CAB_BOTTOM_M = 0.5
_NO_HIT = np.float32(np.inf)
_MIN_SLOPE = 1e-7  # Keeps 1/slope finite for a ray parallel to a slab.


@dataclasses.dataclass(frozen=True)
class Primitives:
  """N primitives of one kind: their parameters, class labels and object ids."""

  params: np.ndarray  # [N, P] float32; P is 6 for boxes and ellipsoids, 5 for cylinders.
  labels: np.ndarray  # [N] uint8 class indices.
  objects: np.ndarray  # [N] int32; the parts of one car share an object id.


@dataclasses.dataclass(frozen=True)
class Road:
  """The road plane's layout in road coordinates (x relative to the curving centre line)."""

  centre_x_m: float  # x of the centre line at z = 0 (the camera drives right of it).
  curvature: float  # Centre line x(z) = centre_x_m + curvature z^2 / 2.
  lane_width_m: float  # Each of the two lanes.
  parking_m: tuple[float, float]  # Parking strip widths (left, right); 0 = none.
  sidewalk_m: tuple[float, float]  # Sidewalk widths (left, right) beyond the road; 0 = none.
  has_markings: bool  # Painted centre and lane-edge lines.
  marking_width_m: float
  dash_length_m: float
  dash_period_m: float


@dataclasses.dataclass(frozen=True)
class Scene:
  """One street scene: the road plane and the primitives standing on it."""

  road: Road
  boxes: Primitives  # params: x0, x1, y0, y1, z0, z1.
  cylinders: Primitives  # Vertical; params: centre x, centre z, radius, y0, y1.
  ellipsoids: Primitives  # Axis-aligned; params: centre x, y, z, radii x, y, z.


def make_primitives(params, labels, objects, num_params: int) -> Primitives:
  """Primitives from lists (possibly empty) of parameter rows, labels and object ids."""
  return Primitives(np.asarray(params, np.float32).reshape(-1, num_params),
                    np.asarray(labels, np.uint8).reshape(-1),
                    np.asarray(objects, np.int32).reshape(-1))


def road_centre_x(road: Road, z):
  """x of the road's centre line at depth z."""
  return road.centre_x_m + 0.5 * road.curvature * np.square(z)


def road_edge_m(road: Road, side: int) -> float:
  """Distance from the centre line to the road's edge on `side` (-1 left, +1 right)."""
  return road.lane_width_m + road.parking_m[(side + 1) // 2]


def outer_edge_m(road: Road, side: int) -> float:
  """Distance from the centre line to the far edge of the sidewalk (or road) on `side`."""
  return road_edge_m(road, side) + road.sidewalk_m[(side + 1) // 2]


# ----------------------------------------------------------------------------------------------
# Scene sampling.


def _uniform(rng: np.random.Generator, bounds) -> float:
  return float(rng.uniform(bounds[0], bounds[1]))


def _count(rng: np.random.Generator, bounds) -> int:
  return int(rng.integers(bounds[0], bounds[1] + 1))


def _side(rng: np.random.Generator) -> int:
  return 1 if rng.random() < 0.5 else -1


class _SceneBuilder:
  """Collects primitives while a scene is sampled; `build` freezes them into a Scene."""

  def __init__(self, road: Road):
    self.road = road
    self._rows = {"boxes": [], "cylinders": [], "ellipsoids": []}
    self._next_object = FIRST_PRIMITIVE_OBJECT

  def new_object(self) -> int:
    self._next_object += 1
    return self._next_object - 1

  def box(self, label, obj, x0, x1, y0, y1, z0, z1):
    self._rows["boxes"].append((label, obj, (min(x0, x1), max(x0, x1), y0, y1, z0, z1)))

  def cylinder(self, label, obj, x, z, radius, y0, y1):
    self._rows["cylinders"].append((label, obj, (x, z, radius, y0, y1)))

  def ellipsoid(self, label, obj, x, y, z, rx, ry, rz):
    self._rows["ellipsoids"].append((label, obj, (x, y, z, rx, ry, rz)))

  def build(self) -> Scene:
    def freeze(kind, num_params):
      rows = self._rows[kind]
      return make_primitives([r[2] for r in rows], [r[0] for r in rows], [r[1] for r in rows],
                             num_params)
    return Scene(self.road, freeze("boxes", 6), freeze("cylinders", 5), freeze("ellipsoids", 6))


def _sample_road(rng, cfg) -> Road:
  lane = _uniform(rng, cfg.lane_width_m)
  parking = tuple(cfg.parking_strip_width_m if rng.random() < cfg.parking_strip_probability
                  else 0.0 for _ in range(2))
  sidewalks = tuple(_uniform(rng, cfg.sidewalk_width_m) if rng.random() < cfg.sidewalk_probability
                    else 0.0 for _ in range(2))
  # The camera is in the middle of the right lane, so the centre line is half a lane to its left.
  centre = -0.5 * lane + _uniform(rng, (-cfg.ego_lateral_jitter_m, cfg.ego_lateral_jitter_m))
  return Road(centre_x_m=centre,
              curvature=_uniform(rng, (-cfg.road_curvature, cfg.road_curvature)),
              lane_width_m=lane, parking_m=parking, sidewalk_m=sidewalks,
              has_markings=bool(rng.random() < cfg.lane_marking_probability),
              marking_width_m=cfg.marking_width_m, dash_length_m=cfg.dash_length_m,
              dash_period_m=cfg.dash_period_m)


def _add_buildings(builder, rng, cfg, side) -> float | None:
  """A row of buildings along one side; returns the facade setback from the outer edge."""
  if rng.random() >= cfg.building_side_probability:
    return None
  road = builder.road
  setback = _uniform(rng, cfg.building_setback_m)
  z, z_end = cfg.building_z_range_m[0] + _uniform(rng, (0.0, 6.0)), cfg.building_z_range_m[1]
  while z < z_end:
    if rng.random() < cfg.building_gap_probability:
      z += _uniform(rng, cfg.building_gap_m)
    length = _uniform(rng, cfg.building_length_m)
    jitter = cfg.building_setback_jitter_m
    front = outer_edge_m(road, side) + max(0.2, setback + _uniform(rng, (-jitter, jitter)))
    near_x = road_centre_x(road, z + 0.5 * length) + side * front
    far_x = near_x + side * _uniform(rng, cfg.building_depth_m)
    builder.box(BUILDING, builder.new_object(), near_x, far_x, 0.0,
                _uniform(rng, cfg.building_height_m), z, z + length)
    z += length + _uniform(rng, (0.0, 1.0))
  return setback


def _verge_offset(rng, road, side, setback) -> float:
  """Lateral position (road coordinates) of a plant between the sidewalk and the facades."""
  free = 14.0 if setback is None else max(0.8, setback - 0.5)
  return side * (outer_edge_m(road, side) + _uniform(rng, (0.5, free)))


def _add_vegetation(builder, rng, cfg, setbacks):
  road = builder.road
  for side, setback in zip((-1, 1), setbacks):
    for _ in range(_count(rng, cfg.trees_per_side)):
      z = _uniform(rng, cfg.tree_z_range_m)
      x = road_centre_x(road, z) + _verge_offset(rng, road, side, setback)
      trunk = _uniform(rng, cfg.tree_trunk_height_m)
      crown = _uniform(rng, cfg.tree_crown_radius_m)
      crown_y = crown * _uniform(rng, (1.0, 1.5))
      obj = builder.new_object()
      builder.cylinder(VEGETATION, obj, x, z, _uniform(rng, cfg.tree_trunk_radius_m), 0.0,
                       trunk + crown_y)
      builder.ellipsoid(VEGETATION, obj, x, trunk + 0.7 * crown_y, z, crown, crown_y, crown)
  for _ in range(_count(rng, cfg.bushes)):
    side = _side(rng)
    z = _uniform(rng, cfg.tree_z_range_m)
    x = road_centre_x(road, z) + _verge_offset(rng, road, side, setbacks[(side + 1) // 2])
    radius = _uniform(rng, cfg.bush_radius_m)
    radius_y = radius * _uniform(rng, (0.5, 0.8))
    builder.ellipsoid(VEGETATION, builder.new_object(), x, 0.4 * radius_y, z, radius, radius_y,
                      radius * _uniform(rng, (0.8, 1.5)))


def _add_treeline(builder, rng, cfg):
  """Big far-away crowns on both sides of the road's vanishing point."""
  if rng.random() >= cfg.treeline_probability:
    return
  road = builder.road
  for _ in range(_count(rng, cfg.treeline_blobs)):
    z = _uniform(rng, cfg.treeline_z_range_m)
    rx, ry = _uniform(rng, (6.0, 18.0)), _uniform(rng, (5.0, 12.0))
    # Keep the road's corridor open so the vanishing point stays visible.
    offset = outer_edge_m(road, 1) + 4.0 + rx + _uniform(rng, (0.0, 50.0))
    builder.ellipsoid(VEGETATION, builder.new_object(), road_centre_x(road, z) + _side(rng) *
                      offset, 0.0, z, rx, ry, _uniform(rng, (4.0, 10.0)))


def _furniture_spot(rng, cfg, road, side) -> tuple[float, float]:
  """(x, z) of a post standing just off the road's edge."""
  z = _uniform(rng, cfg.furniture_z_range_m)
  return road_centre_x(road, z) + side * (road_edge_m(road, side) + _uniform(rng, (0.3, 0.9))), z


def _add_street_lamps(builder, rng, cfg):
  for _ in range(_count(rng, cfg.street_lamps)):
    side = _side(rng)
    x, z = _furniture_spot(rng, cfg, builder.road, side)
    height = _uniform(rng, cfg.street_lamp_height_m)
    obj = builder.new_object()
    builder.cylinder(POLE, obj, x, z, _uniform(rng, cfg.pole_radius_m), 0.0, height)
    if rng.random() < 0.5:  # An arm reaching over the road with the lamp at its end.
      tip = x - side * _uniform(rng, (1.5, 2.5))
      builder.box(POLE, obj, tip, x, height - 0.12, height, z - 0.06, z + 0.06)
      builder.box(POLE, obj, tip, tip + side * 0.5, height - 0.25, height - 0.05, z - 0.15,
                  z + 0.15)


def _add_signs(builder, rng, cfg):
  for _ in range(_count(rng, cfg.signs)):
    side = 1 if rng.random() < 0.7 else -1  # Signs stand mostly on the driver's side.
    x, z = _furniture_spot(rng, cfg, builder.road, side)
    top, size = _uniform(rng, cfg.sign_height_m), _uniform(rng, cfg.sign_size_m)
    builder.cylinder(POLE, builder.new_object(), x, z, 0.04, 0.0, top - 0.5 * size)
    plate = builder.new_object()
    if rng.random() < 0.5:  # A rectangular plate facing the camera...
      builder.box(TRAFFIC_SIGN, plate, x - 0.5 * size, x + 0.5 * size, top - size, top,
                  z - 0.1, z - 0.06)
    else:  # ...or a round one.
      builder.ellipsoid(TRAFFIC_SIGN, plate, x, top - 0.5 * size, z - 0.08, 0.5 * size,
                        0.5 * size, 0.03)


def _add_traffic_lights(builder, rng, cfg):
  if rng.random() >= cfg.traffic_light_probability:
    return
  for _ in range(_count(rng, cfg.traffic_lights)):
    side = _side(rng)
    x, z = _furniture_spot(rng, cfg, builder.road, side)
    radius = _uniform(rng, cfg.pole_radius_m)
    pole = builder.new_object()
    if rng.random() < cfg.traffic_light_mast_probability:
      head_x = x - side * _uniform(rng, (3.0, 6.0))
      builder.cylinder(POLE, pole, x, z, radius, 0.0, 6.0)
      builder.box(POLE, pole, head_x - side * 0.3, x, 5.6, 5.8, z - 0.08, z + 0.08)
      head_top = 5.6
    else:
      height = _uniform(rng, cfg.traffic_light_height_m)
      builder.cylinder(POLE, pole, x, z, radius, 0.0, height - 0.1)
      head_x, head_top = x - side * (radius + 0.2), height
    builder.box(TRAFFIC_LIGHT, builder.new_object(), head_x - 0.18, head_x + 0.18,
                head_top - 1.0, head_top, z - 0.35, z - 0.05)


def _add_car(builder, rng, cfg, x_rel, z0, heading) -> float:
  """A car (body, cabin, two axles) starting at z0; returns its length."""
  length, width = _uniform(rng, cfg.car_length_m), _uniform(rng, cfg.car_width_m)
  height, body_top = _uniform(rng, cfg.car_height_m), _uniform(rng, (0.85, GLASS_HEIGHT_M))
  x = road_centre_x(builder.road, z0 + 0.5 * length) + x_rel + _uniform(rng, (-0.2, 0.2))
  half = 0.5 * width
  obj = builder.new_object()
  builder.box(CAR, obj, x - half, x + half, CAR_BODY_BOTTOM_M, body_top, z0, z0 + length)
  cabin_mid = z0 + 0.5 * length - heading * 0.05 * length  # Cabins sit a little to the rear.
  builder.box(CAR, obj, x - half + 0.08, x + half - 0.08, body_top, height,
              cabin_mid - 0.26 * length, cabin_mid + 0.26 * length)
  for axle in (0.18, 0.82):
    z = z0 + axle * length
    builder.box(CAR, obj, x - half + 0.05, x + half - 0.05, 0.0, 0.62, z - 0.31, z + 0.31)
  return length


def _add_truck(builder, rng, cfg, x_rel, z0, heading) -> float:
  """A truck (cab, cargo box, two axles) starting at z0; returns its length."""
  length, width = _uniform(rng, cfg.truck_length_m), _uniform(rng, cfg.truck_width_m)
  height = _uniform(rng, cfg.truck_height_m)
  x = road_centre_x(builder.road, z0 + 0.5 * length) + x_rel + _uniform(rng, (-0.2, 0.2))
  half, cab = 0.5 * width, 2.0
  # The cab leads: at the far end of a truck driving away, at the near end of an oncoming one.
  cab_z0 = z0 + length - cab if heading > 0 else z0
  cargo_z0 = z0 if heading > 0 else z0 + cab + 0.2
  obj = builder.new_object()
  builder.box(TRUCK, obj, x - half, x + half, TRUCK_CAB_BOTTOM_M, min(height, 2.9), cab_z0,
              cab_z0 + cab)
  builder.box(TRUCK, obj, x - half, x + half, 0.9, height, cargo_z0, cargo_z0 + length - cab - 0.2)
  for axle in (0.12, 0.85):
    z = z0 + axle * length
    builder.box(TRUCK, obj, x - half + 0.1, x + half - 0.1, 0.0, 1.0, z - 0.5, z + 0.5)
  return length


def _add_lane(builder, rng, cfg, x_rel, count, z_start, gap, heading):
  """`count` vehicles one behind the other along a lane, from about z_start on."""
  z = z_start + _uniform(rng, (0.0, gap[1]))
  for _ in range(count):
    add = _add_truck if rng.random() < cfg.truck_probability else _add_car
    direction = heading if heading else _side(rng)  # Parked vehicles face either way.
    z += add(builder, rng, cfg, x_rel, z, direction) + _uniform(rng, gap)


def _add_vehicles(builder, rng, cfg):
  road = builder.road
  half_lane = 0.5 * road.lane_width_m
  _add_lane(builder, rng, cfg, half_lane, _count(rng, cfg.ego_lane_vehicles), 6.0,
            cfg.vehicle_gap_m, 1)
  _add_lane(builder, rng, cfg, -half_lane, _count(rng, cfg.oncoming_vehicles), 4.0,
            cfg.vehicle_gap_m, -1)
  for side in (-1, 1):
    strip = road.parking_m[(side + 1) // 2]
    if strip > 0:
      _add_lane(builder, rng, cfg, side * (road.lane_width_m + 0.5 * strip),
                _count(rng, cfg.parked_vehicles_per_strip), -4.0, cfg.parked_gap_m, 0)


def sample_scene(rng: np.random.Generator, scene_config: ml_collections.ConfigDict) -> Scene:
  """A random street scene drawn from the distribution that `scene_config` parametrises."""
  builder = _SceneBuilder(_sample_road(rng, scene_config))
  setbacks = tuple(_add_buildings(builder, rng, scene_config, side) for side in (-1, 1))
  _add_vegetation(builder, rng, scene_config, setbacks)
  _add_treeline(builder, rng, scene_config)
  _add_street_lamps(builder, rng, scene_config)
  _add_signs(builder, rng, scene_config)
  _add_traffic_lights(builder, rng, scene_config)
  _add_vehicles(builder, rng, scene_config)
  return builder.build()


# ----------------------------------------------------------------------------------------------
# Geometry: ray casting into a z-buffer.


def focal_length_px(width: int, camera_config) -> float:
  """Pinhole focal length giving the configured horizontal field of view."""
  return 0.5 * width / np.tan(np.deg2rad(0.5 * camera_config.horizontal_fov_deg))


def ray_slopes(height: int, width: int, camera_config) -> tuple[np.ndarray, np.ndarray]:
  """Per column dx/dz and per row dy/dz (y up) of the rays through pixel centres.

  A ray's direction is (slope_x[col], slope_y[row], 1): x and y depend on one image axis
  each, which lets slabs and cylinders be intersected per column or per row.
  """
  focal = focal_length_px(width, camera_config)
  horizon = camera_config.horizon_row_fraction * height
  slope_x = ((np.arange(width) + 0.5 - 0.5 * width) / focal).astype(np.float32)
  slope_y = ((horizon - np.arange(height) - 0.5) / focal).astype(np.float32)
  nudge = lambda s: np.where(np.abs(s) < _MIN_SLOPE, np.float32(_MIN_SLOPE), s)  # noqa: E731
  return nudge(slope_x), nudge(slope_y)


def _render_ground(road, slope_x, slope_y, camera_height):
  """Depth, labels and object ids of the road plane (sky above the horizon)."""
  rows, cols = slope_y.shape[0], slope_x.shape[0]
  depth = np.full((rows, cols), _NO_HIT, np.float32)
  labels = np.full((rows, cols), SKY, np.uint8)
  objects = np.full((rows, cols), SKY_OBJECT, np.int32)
  below = slope_y < 0
  z = np.broadcast_to((camera_height / -slope_y[below])[:, None], (below.sum(), cols))
  x_rel = z * slope_x[None, :] - road_centre_x(road, z)
  side_right = x_rel > 0
  distance = np.abs(x_rel)
  edge = np.where(side_right, road_edge_m(road, 1), road_edge_m(road, -1))
  outer = np.where(side_right, outer_edge_m(road, 1), outer_edge_m(road, -1))
  ground_objects = np.where(distance <= edge, ROAD_OBJECT,
                            np.where(distance <= outer, SIDEWALK_OBJECT, TERRAIN_OBJECT))
  if road.has_markings:
    half_line = 0.5 * road.marking_width_m
    dashed = (distance < half_line) & (np.mod(z, road.dash_period_m) < road.dash_length_m)
    lane_edge = np.abs(distance - (road.lane_width_m - road.marking_width_m)) < half_line
    ground_objects = np.where(dashed | lane_edge, MARKING_OBJECT, ground_objects)
  depth[below] = z
  objects[below] = ground_objects
  labels[below] = np.where(ground_objects == TERRAIN_OBJECT, TERRAIN, ROAD)
  return depth, labels, objects


def _screen_windows(bounds, slope_x, slope_y, camera_height, near):
  """[N, 4] pixel windows (row0, row1, col0, col1) holding each world AABB's projection.

  bounds: [N, 6] x0, x1, y0, y1, z0, z1. The slopes x/z and (y - h)/z of a box's corners bound
  those of every point inside it (after clipping it to z >= near), so the window is conservative.
  """
  if bounds.shape[0] == 0:
    return np.zeros((0, 4), np.int64)
  z_near = np.maximum(bounds[:, 4], near)[:, None]
  z_far = np.maximum(bounds[:, 5], near)[:, None]
  xs = np.concatenate([bounds[:, 0:2] / z_near, bounds[:, 0:2] / z_far], axis=1)
  ys = bounds[:, 2:4] - camera_height
  ys = np.concatenate([ys / z_near, ys / z_far], axis=1)

  def index_range(slopes, low, high):  # First and one-past-last index with slope in [low, high].
    descending = slopes[0] > slopes[-1]
    ordered = slopes[::-1] if descending else slopes
    first = np.searchsorted(ordered, low, side="left")
    last = np.searchsorted(ordered, high, side="right")
    if descending:
      first, last = len(slopes) - last, len(slopes) - first
    return first, last

  row0, row1 = index_range(slope_y, ys.min(1), ys.max(1))
  col0, col1 = index_range(slope_x, xs.min(1), xs.max(1))
  visible = bounds[:, 5] > near
  return np.stack([row0, np.where(visible, row1, row0), col0, col1], axis=1)


def _hit_boxes_window(box, sx, sy, camera_height, near):
  """Depth [h, w] (inf = miss) and normals [h, w, 3] of one box over a window (slab method)."""
  x0, x1, y0, y1, z0, z1 = box
  tx_a, tx_b = x0 / sx, x1 / sx
  tx_in, tx_out = np.minimum(tx_a, tx_b)[None, :], np.maximum(tx_a, tx_b)[None, :]
  ty_a, ty_b = (y0 - camera_height) / sy, (y1 - camera_height) / sy
  ty_in, ty_out = np.minimum(ty_a, ty_b)[:, None], np.maximum(ty_a, ty_b)[:, None]
  t_in = np.maximum(np.maximum(tx_in, ty_in), z0)
  t_out = np.minimum(np.minimum(tx_out, ty_out), z1)
  depth = np.where((t_in <= t_out) & (t_in > near), t_in, _NO_HIT)
  # The face entered last is the one hit; its normal points against the ray.
  on_y = ty_in >= np.maximum(tx_in, z0)
  on_x = ~on_y & (tx_in >= z0)
  normals = np.stack([np.where(on_x, -np.sign(sx)[None, :], 0.0),
                      np.where(on_y, -np.sign(sy)[:, None], 0.0),
                      np.where(on_x | on_y, 0.0, -1.0)], axis=-1).astype(np.float32)
  return depth, normals


def _hit_cylinder_window(cylinder, sx, sy, camera_height, near):
  """Depth and normals of one vertical cylinder (no caps) over a window."""
  cx, cz, radius, y0, y1 = cylinder
  # In the xz-plane a ray depends on its column only: solve the circle per column.
  a = np.square(sx) + 1.0
  half_b = -(sx * cx + cz)
  c = cx * cx + cz * cz - radius * radius
  disc = np.square(half_b) - a * c
  t = (-half_b - np.sqrt(np.maximum(disc, 0.0))) / a
  y = camera_height + t[None, :] * sy[:, None]
  hit = ((disc >= 0) & (t > near))[None, :] & (y >= y0) & (y <= y1)
  depth = np.where(hit, t[None, :], _NO_HIT)
  normal_cols = np.stack([(t * sx - cx) / radius, np.zeros_like(t), (t - cz) / radius], -1)
  normals = np.broadcast_to(normal_cols[None], depth.shape + (3,)).astype(np.float32)
  return depth, normals


def _hit_ellipsoid_window(ellipsoid, sx, sy, camera_height, near):
  """Depth and normals of one axis-aligned ellipsoid over a window."""
  cx, cy, cz, rx, ry, rz = ellipsoid
  # Scale space so the ellipsoid becomes the unit sphere.
  ox, oy, oz = -cx / rx, (camera_height - cy) / ry, -cz / rz
  dx, dy, dz = (sx / rx)[None, :], (sy / ry)[:, None], 1.0 / rz
  a = np.square(dx) + np.square(dy) + dz * dz
  half_b = ox * dx + oy * dy + oz * dz
  disc = np.square(half_b) - a * (ox * ox + oy * oy + oz * oz - 1.0)
  t = (-half_b - np.sqrt(np.maximum(disc, 0.0))) / a
  depth = np.where((disc >= 0) & (t > near), t, _NO_HIT).astype(np.float32)
  normals = np.stack([(t * sx[None, :] - cx) / (rx * rx),
                      np.broadcast_to((camera_height + t * sy[:, None] - cy) / (ry * ry), t.shape),
                      (t - cz) / (rz * rz)], axis=-1)
  normals /= np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-12)
  return depth, normals.astype(np.float32)


def _aabbs(kind: str, params: np.ndarray) -> np.ndarray:
  """[N, 6] world bounding boxes of primitives of one kind."""
  if kind == "boxes":
    return params
  if kind == "cylinders":
    x, z, r, y0, y1 = params.T
    return np.stack([x - r, x + r, y0, y1, z - r, z + r], axis=1)
  x, y, z, rx, ry, rz = params.T
  return np.stack([x - rx, x + rx, y - ry, y + ry, z - rz, z + rz], axis=1)


_HIT_FUNCTIONS = {"boxes": _hit_boxes_window, "cylinders": _hit_cylinder_window,
                  "ellipsoids": _hit_ellipsoid_window}


def render_geometry(scene: Scene, height: int, width: int, camera_config):
  """Ray-casts `scene` into (labels uint8, depth_m float32, normals float32, object_ids int32).

  labels: [H, W] classes of VKITTI_KITTI_10, every pixel labelled (sky where nothing is hit).
  depth_m: [H, W] z-distance along the optical axis in metres; 0 on sky (invalid).
  normals: [H, W, 3] unit world normals of the surfaces seen; 0 on sky.
  object_ids: [H, W] SKY_OBJECT, the ground's material ids, or a primitive's object id.
  """
  camera_height, near = camera_config.height_m, camera_config.near_clip_m
  slope_x, slope_y = ray_slopes(height, width, camera_config)
  depth, labels, objects = _render_ground(scene.road, slope_x, slope_y, camera_height)
  normals = np.zeros((height, width, 3), np.float32)
  normals[..., 1] = labels != SKY  # The ground faces up.
  for kind, hit in _HIT_FUNCTIONS.items():
    primitives = getattr(scene, kind)
    windows = _screen_windows(_aabbs(kind, primitives.params), slope_x, slope_y, camera_height,
                              near)
    for params, label, obj, (row0, row1, col0, col1) in zip(
        primitives.params, primitives.labels, primitives.objects, windows):
      if row1 <= row0 or col1 <= col0:
        continue
      hit_depth, hit_normals = hit(params, slope_x[col0:col1], slope_y[row0:row1],
                                   camera_height, near)
      window = (slice(row0, row1), slice(col0, col1))
      closer = hit_depth < depth[window]
      depth[window][closer] = hit_depth[closer]
      labels[window][closer] = label
      objects[window][closer] = obj
      normals[window][closer] = hit_normals[closer]
  depth[np.isinf(depth)] = 0.0
  return labels, depth, normals, objects


# ----------------------------------------------------------------------------------------------
# Appearance.


def _hash_unit(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
  """A pseudo-random value in [0, 1) per integer lattice point (an integer hash)."""
  h = (ix.astype(np.uint32) * np.uint32(0x27D4EB2D) + iy.astype(np.uint32) *
       np.uint32(0x165667B1) + np.uint32(seed))
  h ^= h >> np.uint32(15)
  h *= np.uint32(0x2C1B3C6D)
  h ^= h >> np.uint32(12)
  h *= np.uint32(0x297A2D39)
  h ^= h >> np.uint32(15)
  return h.astype(np.float32) * np.float32(2.0 ** -32)


def value_noise(s: np.ndarray, t: np.ndarray, seed: int) -> np.ndarray:
  """Smooth value noise in [0, 1] at continuous coordinates (lattice spacing 1)."""
  floor_s, floor_t = np.floor(s), np.floor(t)
  fs, ft = s - floor_s, t - floor_t
  fs, ft = fs * fs * (3.0 - 2.0 * fs), ft * ft * (3.0 - 2.0 * ft)  # Smoothstep: no grid creases.
  i, j = floor_s.astype(np.int64), floor_t.astype(np.int64)
  top = _hash_unit(i, j, seed) * (1 - fs) + _hash_unit(i + 1, j, seed) * fs
  bottom = _hash_unit(i, j + 1, seed) * (1 - fs) + _hash_unit(i + 1, j + 1, seed) * fs
  return top * (1 - ft) + bottom * ft


def _fractal_noise(s, t, seed):
  """Two octaves of value noise, in [0, 1]."""
  return (2.0 * value_noise(s, t, seed) + value_noise(2.7 * s + 5.3, 2.7 * t + 1.7, seed + 1)) / 3


@dataclasses.dataclass(frozen=True)
class _Surface:
  """Where each pixel's surface is: what textures, windows and the sky gradient need."""

  y: np.ndarray  # [H, W] height above the road (m).
  s: np.ndarray  # [H, W] first texture coordinate (m).
  t: np.ndarray  # [H, W] second texture coordinate (m).
  axis: np.ndarray  # [H, W] the world axis the normal is closest to (0 x, 1 y, 2 z).
  elevation: np.ndarray  # [H, 1] 0 at the horizon row, 1 at the top row.


def _surface_coordinates(depth_m, normals, labels, camera_config) -> _Surface:
  """Heights and 2-d texture coordinates of each pixel's surface.

  A surface is textured in the plane most orthogonal to its normal (walls facing the road in
  (z, y), the ground in (x, z), faces looking at the camera in (x, y)); the sky, which has no
  depth, in ray-slope space scaled by 100.
  """
  height, width = depth_m.shape
  slope_x, slope_y = ray_slopes(height, width, camera_config)
  x = depth_m * slope_x[None, :]
  y = camera_config.height_m + depth_m * slope_y[:, None]
  axis = np.argmax(np.abs(normals), axis=-1)
  s = np.where(axis == 0, depth_m, x)
  t = np.where(axis == 1, depth_m, y)
  sky = labels == SKY
  s = np.where(sky, 100.0 * slope_x[None, :], s)
  t = np.where(sky, 100.0 * slope_y[:, None], t)
  elevation = np.clip(slope_y / max(float(slope_y[0]), 1e-6), 0.0, 1.0)[:, None]
  return _Surface(y=y, s=s, t=t, axis=axis, elevation=elevation)


def _blur_rows(image: np.ndarray, taps: np.ndarray) -> np.ndarray:
  """Correlates axis 0 of `image` with odd-length `taps`, edge padding."""
  radius, size = len(taps) // 2, image.shape[0]
  padded = np.concatenate([image[:1]] * radius + [image] + [image[-1:]] * radius, axis=0)
  blurred = taps[0] * padded[:size]
  for k in range(1, len(taps)):
    blurred += taps[k] * padded[k:k + size]
  return blurred


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
  """Separable Gaussian blur of [H, W, C] with edge padding."""
  radius = int(np.ceil(3.0 * sigma))
  taps = np.exp(-0.5 * np.square(np.arange(-radius, radius + 1) / sigma))
  taps = (taps / taps.sum()).astype(np.float32)
  image = _blur_rows(image, taps)
  return _blur_rows(image.swapaxes(0, 1), taps).swapaxes(0, 1)


def _dct_matrix(size: int = 8) -> np.ndarray:
  """Orthonormal DCT-II matrix [size, size]."""
  k, n = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
  matrix = np.cos(np.pi * (2 * n + 1) * k / (2 * size)) * np.sqrt(2.0 / size)
  matrix[0] /= np.sqrt(2.0)
  return matrix.astype(np.float32)


_RGB_TO_YCBCR = np.array([[0.299, 0.587, 0.114], [-0.1687, -0.3313, 0.5],
                          [0.5, -0.4187, -0.0813]], np.float32)
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR).astype(np.float32)


def _mix_channels(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
  """image [..., C] times matrix.T, written out: a BLAS product here would spawn threads."""
  return np.stack([sum(matrix[o, i] * image[..., i] for i in range(matrix.shape[1]))
                   for o in range(matrix.shape[0])], axis=-1)


def _jpeg_like(image: np.ndarray, step: float) -> np.ndarray:
  """Quantises 8x8 DCT blocks of luma (step) and chroma (2 step), coarser at high frequency."""
  height, width, _ = image.shape
  padded = np.pad(image, ((0, -height % 8), (0, -width % 8), (0, 0)), mode="edge")
  rows, cols = padded.shape[0] // 8, padded.shape[1] // 8
  ycc = _mix_channels(padded, _RGB_TO_YCBCR)
  blocks = ycc.reshape(rows, 8, cols, 8, 3).transpose(0, 2, 4, 1, 3)  # [r, c, channel, i, j]
  dct = _dct_matrix()
  frequency = np.add.outer(np.arange(8), np.arange(8)).astype(np.float32)
  quant = step * (1.0 + frequency)[None] * np.array([1.0, 2.0, 2.0], np.float32)[:, None, None]
  # A stack of 8x8 products stays single-threaded in BLAS (one large product would not).
  coefficients = np.round(dct @ blocks @ dct.T / quant) * quant
  blocks = dct.T @ coefficients @ dct
  ycc = blocks.transpose(0, 3, 1, 4, 2).reshape(rows * 8, cols * 8, 3)
  return _mix_channels(ycc, _YCBCR_TO_RGB)[:height, :width]


def _srgb_like_to_linear(rgb, gamma: float) -> np.ndarray:
  """Display-space 0..255 colours to linear reflectance under the look's tone curve."""
  return np.power(np.asarray(rgb, np.float32) / 255.0, gamma)


def _object_albedos(labels, object_ids, look, gamma, rng) -> np.ndarray:
  """[num_objects, 3] linear colour of every object: its class colour with per-object jitter."""
  num_objects = int(object_ids.max()) + 1
  object_class = np.full(num_objects, SKY, np.int64)
  object_class[object_ids.ravel()] = labels.ravel()  # Every object has a single class.
  colour_std = np.asarray(look.object_colour_jitter, np.float32)[object_class]
  brightness_std = np.asarray(look.object_brightness_jitter, np.float32)[object_class]
  colour_draw = rng.standard_normal((num_objects, 3), dtype=np.float32)
  brightness_draw = rng.standard_normal(num_objects, dtype=np.float32)
  jitter = np.exp(colour_std[:, None] * colour_draw + (brightness_std * brightness_draw)[:, None])
  albedos = _srgb_like_to_linear(look.palette, gamma)[object_class] * jitter
  if num_objects > MARKING_OBJECT:
    albedos[MARKING_OBJECT] = _srgb_like_to_linear(look.marking_rgb, gamma)
  return albedos


def _texture_gain(labels, object_ids, surface, look, seed) -> np.ndarray | None:
  """[H, W] multiplicative value-noise texture in 1 +- amplitude, or None when all flat."""
  amplitude = np.asarray(look.texture_amplitude, np.float32)
  if not np.any(amplitude > 0):
    return None
  scale = np.asarray(look.texture_scale_m, np.float32)[labels]
  # Each object samples its own patch of the noise.
  offset = np.float32(17.13) * object_ids.astype(np.float32)
  noise = _fractal_noise(surface.s / scale + offset, surface.t / scale, seed)
  return np.maximum(1.0 + amplitude[labels] * (2.0 * noise - 1.0), 0.0)


def _window_mask(labels, object_ids, surface, look) -> np.ndarray:
  """[H, W] building pixels on a window of the facade grid (above the ground floor)."""
  walls = (labels == BUILDING) & (surface.axis != 1) & (surface.y > 2.5)
  period_h, period_v = look.window_period_m
  # Each building's grid starts somewhere else along the street.
  shift = np.float32(7.31) * object_ids[walls].astype(np.float32)
  along = np.mod((surface.s[walls] + shift) / period_h, 1.0)
  up = np.mod(surface.y[walls] / period_v, 1.0)
  window = np.zeros_like(walls)
  window[walls] = (along > 0.3) & (along < 0.75) & (up > 0.35) & (up < 0.8)
  return window


def _albedo(labels, object_ids, surface, look, gamma, rng):
  """Linear reflectance [H, W, 3]: palette, per-object jitter, markings, textures, windows."""
  albedo = _object_albedos(labels, object_ids, look, gamma, rng)[object_ids]
  texture_seed = int(rng.integers(0, 2 ** 31))
  # The sky goes from its palette colour at the horizon to the zenith colour at the top row.
  sky = labels == SKY
  zenith = _srgb_like_to_linear(look.sky_zenith_rgb, gamma)
  elevation = np.broadcast_to(surface.elevation, labels.shape)[sky][:, None]
  albedo[sky] = albedo[sky] * (1 - elevation) + zenith * elevation
  gain = _texture_gain(labels, object_ids, surface, look, texture_seed)
  if gain is not None:
    albedo *= gain[..., None]
  if look.window_contrast > 0:
    window = _window_mask(labels, object_ids, surface, look)
    albedo[window] *= (1.0 - look.window_contrast) * np.array([0.85, 0.95, 1.1], np.float32)
  if look.vehicle_darkening > 0:
    glass = (labels == CAR) & (surface.y > GLASS_HEIGHT_M)
    wheels = (((labels == CAR) & (surface.y < CAR_BODY_BOTTOM_M)) |
              ((labels == TRUCK) & (surface.y < TRUCK_CAB_BOTTOM_M)))
    albedo[glass | wheels] *= 1.0 - look.vehicle_darkening
  return albedo


def render_appearance(labels, depth_m, normals, object_ids, appearance_config, rng,
                      camera_config) -> np.ndarray:
  """Paints a rendered geometry in one look: uint8 image [H, W, 3].

  Textures live on the surfaces (world metres), so they need the camera that gave the depth:
  `camera_config` is the one passed to `render_geometry`. `rng` draws per-object colours, the
  texture seed, exposure and sensor noise.
  """
  look = appearance_config
  gamma = float(look.gamma)
  surface = _surface_coordinates(depth_m, normals, labels, camera_config)
  albedo = _albedo(labels, object_ids, surface, look, gamma, rng)
  sun = np.asarray(look.sun_direction, np.float32)
  sun /= np.linalg.norm(sun)
  lambert = normals[..., 0] * sun[0] + normals[..., 1] * sun[1] + normals[..., 2] * sun[2]
  light = look.ambient + look.sun_intensity * np.maximum(lambert, 0.0)
  light = np.where(labels == SKY, 1.0, light)  # The sky emits its colour.
  radiance = albedo * light[..., None]
  if look.blur_sigma_px > 0:
    radiance = _gaussian_blur(radiance, look.blur_sigma_px)
  exposure = float(np.exp(look.exposure_jitter * rng.standard_normal()))
  radiance = radiance * (exposure * np.asarray(look.white_balance, np.float32))
  if look.vignetting > 0:
    height, width = labels.shape
    v = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None]
    u = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :]
    radiance = radiance * (1.0 - 0.5 * look.vignetting * (u * u + v * v))[..., None]
  image = np.power(np.maximum(radiance, 0.0), 1.0 / gamma)
  if look.noise_std > 0:
    image = image + look.noise_std * rng.standard_normal(image.shape, dtype=np.float32)
  if look.jpeg_step > 0:
    image = _jpeg_like(image, look.jpeg_step)
  return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Examples.


def depth_to_centimetres(depth_m: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """uint16 centimetres as Virtual KITTI stores depth: the sky and surfaces beyond 655.35 m
  at the far clip FAR_DEPTH_CM."""
  depth_cm = np.clip(np.round(depth_m * 100.0), 0, FAR_DEPTH_CM).astype(np.uint16)
  depth_cm[labels == SKY] = FAR_DEPTH_CM
  return depth_cm


def _check_domain_and_split(domain: str, split: str):
  if domain not in DOMAINS:
    raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
  if split not in SPLIT_CODES:
    raise ValueError(f"split must be one of {tuple(SPLIT_CODES)}, got {split!r}")


def ignore_interrupts() -> None:
  """Initializer of rendering worker processes: Ctrl-C (SIGINT to the whole process group)
  stops the main process, which ends the workers, without a traceback from each of them."""
  signal.signal(signal.SIGINT, signal.SIG_IGN)


def generate_example(config: ml_collections.ConfigDict, domain: str, split: str,
                     index: int) -> dict:
  """Example `index` of a domain's split, a function of (config, domain, split, index) only.

  The geometry comes from its own random stream keyed by (seed, split, scene index), where the
  target's scene index is shifted by `target_scene_offset`; appearance draws from another stream
  keyed by (seed, split, index, domain).
  Returns {"id", "image" uint8 [H, W, 3], "label" uint8 [H, W], "depth" uint16 [H, W] cm}.
  """
  _check_domain_and_split(domain, split)
  split_code = SPLIT_CODES[split]
  scene_index = index + (config.target_scene_offset if domain == "target" else 0)
  geometry_rng = np.random.default_rng([config.seed, split_code, scene_index, 0])
  scene = sample_scene(geometry_rng, config.scene)
  labels, depth_m, normals, objects = render_geometry(scene, config.height, config.width,
                                                      config.camera)
  appearance_rng = np.random.default_rng([config.seed, split_code, index,
                                          1 + DOMAINS.index(domain)])
  image = render_appearance(labels, depth_m, normals, objects, config[domain], appearance_rng,
                            config.camera)
  return {"id": f"{domain}/{split}/{index:06d}", "image": image, "label": labels,
          "depth": depth_to_centimetres(depth_m, labels)}


def generate_examples(config: ml_collections.ConfigDict, domain: str, split: str,
                      num_examples: int) -> Iterator[dict]:
  """Examples 0 .. num_examples - 1 of a domain's split, in order."""
  _check_domain_and_split(domain, split)
  for index in range(num_examples):
    yield generate_example(config, domain, split, index)


# ----------------------------------------------------------------------------------------------
# Pictures.

# The contact sheet's depth: a log scale from 2 m (brightest) to 200 m and beyond (darkest).
_SHEET_NEAR_M, _SHEET_FAR_M = 2.0, 200.0
_SHEET_GAP = 2  # pixels of white between the contact sheet's tiles


def contact_sheet(config: ml_collections.ConfigDict, num_scenes: int, path: str):
  """PNG at `path`, one row per train index: source image | label | depth | target image | ...

  Labels are coloured with VKITTI_KITTI_10's palette, depth with images.depth_colours on a log
  scale from 2 to 200 m (invalid, 0 cm: black).
  """
  palette = VKITTI_KITTI_10.palette()
  rows = []
  for index in range(num_scenes):
    row = []
    for domain in DOMAINS:
      example = generate_example(config, domain, "train", index)
      depth_cm = example["depth"]
      row += [example["image"], palette[example["label"]],
              depth_colours(depth_cm.astype(np.float32) / 100.0, depth_cm > 0,
                            scale=_SHEET_FAR_M, near=_SHEET_NEAR_M)]
    rows.append(row)
  write_png(path, panel(rows, gap=_SHEET_GAP))
