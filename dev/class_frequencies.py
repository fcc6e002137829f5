"""Per-class pixel fractions of the procedural domains' scenes, as a Markdown table.

    python dev/class_frequencies.py                                  # the demo config
    python dev/class_frequencies.py --config configs/procedural_layout_shift.py
    python dev/class_frequencies.py --num_scenes 50 --split validation

Renders the labels (not the looks) of scenes 0 .. num_scenes - 1 of a split of both domains at the
config's data.procedural size and prints, per class, the percentage of pixels it covers in the
source and in the target, and the target minus the source in points (docs/data.md, "Layout
shift"). Writes nothing.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from gio_ada_jax import configs
from gio_ada_jax.data import procedural
from gio_ada_jax.data.labels import VKITTI_KITTI_10

_CONFIG = config_flags.DEFINE_config_file("config", configs.path("demo"), "The config.")
_NUM_SCENES = flags.DEFINE_integer("num_scenes", 50, "Scenes per domain.")
_SPLIT = flags.DEFINE_enum("split", "train", list(procedural.SPLIT_CODES), "The split.")


def table(procedural_config, split: str, num_scenes: int) -> str:
  """The Markdown table: class | source % | target % | target - source (points)."""
  source, target = (procedural.class_pixel_fractions(procedural_config, domain, split,
                                                     num_scenes) * 100
                    for domain in procedural.DOMAINS)
  rows = ["| class | source % | target % | target - source |", "|---|---:|---:|---:|"]
  rows += [f"| {name} | {s:.2f} | {t:.2f} | {t - s:+.2f} |"
           for name, s, t in zip(VKITTI_KITTI_10.class_names, source, target)]
  return "\n".join(rows)


def main(argv) -> int:
  problem = (f"unexpected arguments {argv[1:]}; every setting is a --flag" if len(argv) > 1 else
             f"--num_scenes={_NUM_SCENES.value}; give at least 1" if _NUM_SCENES.value < 1 else
             None)
  if problem:
    print(f"class_frequencies: {problem}.", file=sys.stderr)
    return 2
  config = _CONFIG.value.data.procedural
  print(f"{_NUM_SCENES.value} {_SPLIT.value} scenes per domain at {config.height}x{config.width}")
  print(table(config, _SPLIT.value, _NUM_SCENES.value))
  return 0


if __name__ == "__main__":
  sys.exit(app.run(main))
