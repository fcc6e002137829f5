"""Every default of the procedural sim-to-real street scenes (gio_ada_jax/data/procedural.py).

One camera, a scene (layout) distribution per domain and two appearance domains: `source`
(flat, synthetic renderings) and `target` (photo-like). Both appearance dicts have the same fields,
so a new target domain is the source or target dict with some fields overridden.

`scene` is the source's layout distribution and, by default, the target's too: every field of
`target_scene` is a one-way reference to the same field of `scene`
(`ConfigDict.get_oneway_ref`). So a change of `scene.X` changes both domains, unless the target
overrides X itself (`--config.data.procedural.target_scene.X=...`), which changes only the
target's scenes (a layout shift: class frequencies, object sizes and density, not only looks;
configs/procedural_layout_shift.py). Why references: a copy of `scene` would silently leave the
target on the old value when only `scene.X` is edited; a dict of overrides would not be typed,
listed or checked like other fields, whereas each `target_scene.X` is an ordinary leaf (command
line, types, the config inventory). Set `scene`'s fields; assigning a new dict to `scene` itself
would cut the references. `to_json()` and `copy_and_resolve_references()` give the resolved
values (the prepared data's stored config).
Colours are display-space RGB in 0..255; per-class tuples follow VKITTI_KITTI_10's order
(road, building, pole, traffic light, traffic sign, vegetation, terrain, sky, car, truck).
"""

import ml_collections


def _camera_config() -> ml_collections.ConfigDict:
  """A KITTI-like car-mounted camera: level, 1.65 m above a flat road, looking forward."""
  camera = ml_collections.ConfigDict()
  camera.height_m = 1.65  # Height of the optical centre above the road (KITTI: 1.65 m).
  camera.horizontal_fov_deg = 85.0  # Horizontal field of view; sets the focal length in pixels.
  # Row of the horizon (the principal point) as a fraction of the image height from the top.
  camera.horizon_row_fraction = 0.45
  camera.near_clip_m = 0.1  # Surfaces closer than this along the optical axis are not drawn.
  return camera


def _scene_config() -> ml_collections.ConfigDict:
  """The layout distribution; (lo, hi) pairs are uniform ranges, integer pairs inclusive."""
  scene = ml_collections.ConfigDict()
  # Road: two lanes, the camera drives in the right one (right-hand traffic, as in KITTI).
  scene.lane_width_m = (3.0, 3.7)  # Width of each of the two lanes.
  scene.ego_lateral_jitter_m = 0.4  # Camera's offset from its lane centre, uniform +-.
  scene.road_curvature = 0.0015  # Max |curvature| (1/m); centre line x(z) = x0 + c z^2 / 2.
  scene.parking_strip_probability = 0.5  # Per side: a parking strip (with parked cars) on the road.
  scene.parking_strip_width_m = 2.3  # Width of a parking strip.
  scene.lane_marking_probability = 0.8  # Probability the road has painted lines.
  scene.marking_width_m = 0.15  # Width of a painted line.
  scene.dash_length_m = 3.0  # Length of a dash of the centre line.
  scene.dash_period_m = 9.0  # Dash + gap length of the centre line.
  scene.sidewalk_probability = 0.6  # Per side: a paved sidewalk (labelled road) beside the road.
  scene.sidewalk_width_m = (1.5, 3.5)  # Width of a sidewalk.
  # Buildings: boxes in a row along each side, with gaps (grass shows through).
  scene.building_side_probability = 0.75  # Per side: the side is lined with buildings.
  scene.building_setback_m = (0.3, 8.0)  # Grass between sidewalk (or road) edge and facades.
  scene.building_setback_jitter_m = 1.0  # Per-building change of the setback, uniform +-.
  scene.building_length_m = (6.0, 20.0)  # Extent along the road.
  scene.building_depth_m = (6.0, 14.0)  # Extent away from the road.
  scene.building_height_m = (4.0, 16.0)  # Height.
  scene.building_gap_probability = 0.25  # Chance of a gap before each building.
  scene.building_gap_m = (3.0, 14.0)  # Length of a gap.
  scene.building_z_range_m = (-12.0, 90.0)  # Where rows of buildings start and end along z.
  # Vegetation.
  scene.trees_per_side = (0, 5)  # Trees (trunk + ellipsoid crown, all vegetation) per side.
  scene.tree_z_range_m = (2.0, 70.0)  # Where trees stand along z.
  scene.tree_trunk_height_m = (1.5, 3.5)  # Trunk height (crown starts near its top).
  scene.tree_trunk_radius_m = (0.12, 0.25)  # Trunk radius.
  scene.tree_crown_radius_m = (1.2, 3.0)  # Horizontal crown radius; vertical is 1-1.5x that.
  scene.bushes = (0, 5)  # Bushes (low ellipsoids) per scene.
  scene.bush_radius_m = (0.5, 1.5)  # Horizontal bush radius; vertical is 0.5-0.8x that.
  scene.treeline_probability = 0.6  # Probability of a distant tree line hiding the horizon.
  scene.treeline_blobs = (4, 8)  # Ellipsoids making the tree line.
  scene.treeline_z_range_m = (90.0, 180.0)  # Distance of the tree line.
  # Street furniture, all beside the road edge.
  scene.street_lamps = (1, 4)  # Lamp posts (pole, with an arm over the road half the time).
  scene.street_lamp_height_m = (6.0, 9.0)  # Lamp post height.
  scene.pole_radius_m = (0.07, 0.12)  # Radius of lamp and traffic-light poles.
  scene.furniture_z_range_m = (4.0, 55.0)  # Where poles, signs and traffic lights stand.
  scene.signs = (1, 3)  # Traffic signs (thin pole labelled pole + plate labelled sign).
  scene.sign_height_m = (2.0, 2.8)  # Height of the sign's top.
  scene.sign_size_m = (0.6, 0.9)  # Plate width and height (round plates: diameter).
  scene.traffic_light_probability = 0.6  # Probability of any traffic lights in a scene.
  scene.traffic_lights = (1, 2)  # Traffic lights when there are any.
  scene.traffic_light_mast_probability = 0.5  # The head hangs from an arm over the road.
  scene.traffic_light_height_m = (3.5, 4.5)  # Post height without a mast arm (6 m with one).
  # Vehicles: sequences along four lanes (ego, oncoming, parked left, parked right).
  scene.ego_lane_vehicles = (0, 2)  # Vehicles ahead in the camera's lane.
  scene.oncoming_vehicles = (0, 3)  # Vehicles in the opposite lane.
  scene.parked_vehicles_per_strip = (1, 5)  # Vehicles per parking strip.
  scene.vehicle_gap_m = (4.0, 25.0)  # Bumper-to-bumper gap in moving lanes.
  scene.parked_gap_m = (0.8, 8.0)  # Bumper-to-bumper gap of parked vehicles.
  scene.truck_probability = 0.12  # Each vehicle is a truck with this probability.
  scene.car_length_m = (3.8, 4.9)  # Car length.
  scene.car_width_m = (1.65, 1.9)  # Car width.
  scene.car_height_m = (1.35, 1.6)  # Car height (body + cabin).
  scene.truck_length_m = (6.0, 10.0)  # Truck length (cab + cargo box).
  scene.truck_width_m = (2.3, 2.5)  # Truck width.
  scene.truck_height_m = (3.0, 3.8)  # Height of the cargo box.
  return scene


def _target_scene_config(scene: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The target's layout: each field follows `scene`'s until it is set (one-way references)."""
  target_scene = ml_collections.ConfigDict()
  for name in scene:
    target_scene[name] = scene.get_oneway_ref(name)
  return target_scene


def _source_appearance() -> ml_collections.ConfigDict:
  """The synthetic domain: flat class colours, Lambertian sun, no noise, no blur, linear."""
  look = ml_collections.ConfigDict()
  # Base colour per class (sky: its colour at the horizon).
  look.palette = ((100, 100, 108), (196, 164, 132), (165, 165, 170), (60, 60, 60),
                  (235, 205, 40), (72, 160, 56), (150, 190, 90), (135, 185, 245),
                  (205, 45, 45), (225, 225, 235))
  look.sky_zenith_rgb = (135, 185, 245)  # Sky colour straight up (equal to horizon: flat sky).
  look.marking_rgb = (235, 235, 235)  # Painted road lines.
  look.object_colour_jitter = (0.0,) * 10  # Per class: std of per-object log-colour per channel.
  look.object_brightness_jitter = (0.0,) * 10  # Per class: std of per-object log-brightness.
  look.texture_amplitude = (0.0,) * 10  # Per class: contrast of value-noise texture (0 = flat).
  # Per class: feature size of the texture in metres (sky: in units of 1/100 ray slope).
  look.texture_scale_m = (0.4, 2.0, 0.5, 0.3, 0.3, 0.25, 0.6, 6.0, 1.5, 2.0)
  look.window_contrast = 0.0  # Darkening of building windows (0 = no windows).
  look.window_period_m = (3.2, 3.0)  # Window grid: horizontal and vertical period.
  look.vehicle_darkening = 0.0  # Darkening of car windows (above 1 m) and vehicles' wheels.
  look.sun_direction = (0.4, 0.8, -0.45)  # Towards the sun: x right, y up, z forward.
  look.sun_intensity = 0.6  # Direct light on a surface facing the sun.
  look.ambient = 0.45  # Light on every surface.
  look.white_balance = (1.0, 1.0, 1.0)  # RGB gains (colour temperature).
  look.exposure_jitter = 0.0  # Std of the per-image log-exposure.
  look.gamma = 1.0  # Tone curve: palette decoded with it, radiance encoded with 1/it.
  look.vignetting = 0.0  # Relative darkening at the image corners.
  look.blur_sigma_px = 0.0  # Gaussian optical blur (0 = none).
  look.noise_std = 0.0  # Gaussian sensor noise, in 0..1 intensity units.
  look.jpeg_step = 0.0  # JPEG-like 8x8 DCT quantisation step of luma (chroma 2x); 0 = off.
  return look


def _target_appearance() -> ml_collections.ConfigDict:
  """The photo-like domain: the source's fields with another palette, textures and a camera."""
  look = _source_appearance()
  look.palette = ((92, 90, 90), (158, 138, 122), (120, 118, 112), (38, 38, 40),
                  (60, 90, 165), (62, 86, 42), (128, 122, 82), (205, 212, 220),
                  (115, 115, 120), (175, 172, 165))  # Greyer, darker, photo-like colours.
  look.sky_zenith_rgb = (110, 150, 200)  # Sky darkens towards the zenith.
  look.marking_rgb = (205, 205, 195)  # Worn white paint.
  # Cars and signs vary most from object to object, buildings next.
  look.object_colour_jitter = (0.04, 0.1, 0.05, 0.05, 0.5, 0.12, 0.12, 0.03, 0.2, 0.12)
  look.object_brightness_jitter = (0.08, 0.25, 0.15, 0.1, 0.2, 0.2, 0.15, 0.05, 0.6, 0.25)
  # Grain on road, leaf noise on vegetation, clouds in the sky.
  look.texture_amplitude = (0.3, 0.3, 0.15, 0.1, 0.1, 0.7, 0.5, 0.15, 0.1, 0.15)
  look.window_contrast = 0.55  # Dark windows on facades.
  look.vehicle_darkening = 0.65  # Dark car windows and tyres.
  look.sun_direction = (-0.5, 0.55, 0.6)  # Low sun from the front left.
  look.sun_intensity = 0.85  # Harder light than the source...
  look.ambient = 0.3  # ...and darker shade.
  look.white_balance = (1.06, 1.0, 0.9)  # Warm colour temperature.
  look.exposure_jitter = 0.15  # Auto-exposure varies from photo to photo.
  look.gamma = 2.2  # sRGB-like tone curve.
  look.vignetting = 0.35  # Lens falloff.
  look.blur_sigma_px = 0.7  # Soft optics.
  look.noise_std = 0.02  # Sensor noise.
  look.jpeg_step = 0.02  # Compression artefacts.
  return look


def procedural_config() -> ml_collections.ConfigDict:
  """Every default of the procedural benchmark (the lead hangs it at config.data.procedural)."""
  config = ml_collections.ConfigDict()
  config.height = 128  # Image height in pixels (demo size).
  config.width = 384  # Image width in pixels (KITTI's ~3:1 aspect).
  config.seed = 0  # Seeds every scene and every appearance draw.
  config.num_train = 2000  # Training examples per domain.
  config.num_validation = 500  # Validation examples per domain.
  # Added to the example index to pick the target domain's scene, so that by default source and
  # target images show different scenes (unpaired data); 0 pairs them.
  config.target_scene_offset = 1_000_000
  config.camera = _camera_config()  # Camera geometry.
  config.scene = _scene_config()  # Scene layout distribution (source; target by default).
  # The target's layout distribution: each field is `scene`'s until overridden here.
  config.target_scene = _target_scene_config(config.scene)
  config.source = _source_appearance()  # Synthetic appearance (labels and depth used).
  config.target = _target_appearance()  # Real-looking appearance (labels for evaluation only).
  return config
