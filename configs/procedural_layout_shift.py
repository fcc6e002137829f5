"""The demo (configs/demo.py) with a layout shift: the target's scenes come from another layout
distribution than the source's, so the domains differ in content (class frequencies, object sizes
and density), not only in looks:

    python -m gio_ada_jax.demo --config configs/procedural_layout_shift.py \\
        --output_dir demo_layout_shift

What changes: only `data.procedural.target_scene` (every field not set here follows
`data.procedural.scene`), so the source domain is the demo's, image for image. The target is a
leafier, busier street: wider lanes and fewer sidewalks; buildings on fewer sides, lower, set
further back and with more gaps; more and larger trees, more bushes, a tree line almost always;
parking strips on most sides, fuller and tighter; more moving traffic, fewer trucks. Measured
over 50 train scenes per domain (docs/data.md, "Layout shift"), the target has about 9 points
fewer building pixels and 9 more car pixels than the source, 4 more vegetation and 4 more sky,
and a third of the truck pixels.

Why: with one layout for both domains the gap is appearance only, which a cycle-consistent
colour mapping captures (CycleGAN beat G_img on the demo, unlike the paper's Table 2); real and
synthetic datasets also differ in what their images show, which a translation of looks alone
does not change. The changes are modest on purpose: every class keeps a share of the pixels in
both domains.
"""

from configs import demo


def get_config(variant: str = "+sd,joint"):
  """configs/demo.py's config with target-only layout overrides."""
  config = demo.get_config(variant)
  target = config.data.procedural.target_scene
  # In parentheses: scene's default, which the source keeps.
  target.lane_width_m = (3.5, 4.2)  # wider lanes (3.0-3.7 m)
  target.sidewalk_probability = 0.3  # (0.6)
  target.building_side_probability = 0.65  # (0.75)
  target.building_height_m = (3.5, 12.0)  # lower houses (4-16 m)
  target.building_setback_m = (1.5, 10.0)  # front gardens (0.3-8 m)
  target.building_gap_probability = 0.35  # (0.25)
  target.trees_per_side = (1, 6)  # (0-5)
  target.tree_crown_radius_m = (1.5, 3.5)  # (1.2-3 m)
  target.bushes = (2, 8)  # (0-5)
  target.treeline_probability = 0.9  # (0.6)
  target.parking_strip_probability = 0.85  # (0.5)
  target.parked_vehicles_per_strip = (2, 6)  # (1-5)
  target.parked_gap_m = (0.5, 4.0)  # (0.8-8 m)
  target.ego_lane_vehicles = (1, 3)  # (0-2)
  target.oncoming_vehicles = (1, 4)  # (0-3)
  target.truck_probability = 0.05  # (0.12)
  return config
