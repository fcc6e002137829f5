"""The target's own layout (data.procedural.target_scene): overrides reach only the target,
scene.* still reaches both, an earlier version's stored or recorded config is refused, and
configs/procedural_layout_shift.py shifts the class frequencies it documents."""

import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from configs import demo, procedural_layout_shift, test as test_config
from configs.procedural import procedural_config
from gio_ada_jax.config_checks import ConfigError
from gio_ada_jax.data import pipeline, procedural
from gio_ada_jax.train import run_config

REPO = pathlib.Path(__file__).resolve().parent.parent
KEYS = ("image", "label", "depth")


def _tiny(config=None):
  config = config or procedural_config()
  config.height, config.width = 24, 40
  return config


def _scenes(config, domain: str, count: int = 6) -> list[dict]:
  return [procedural.generate_example(config, domain, "train", i) for i in range(count)]


def _same(a: list[dict], b: list[dict]) -> bool:
  return all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in KEYS)


def _parse(*overrides: str):
  """configs/demo.py with command-line overrides, parsed as train.py parses them."""
  argv = ["prog", f"--config={REPO / 'configs' / 'demo.py'}", *overrides]
  flag_values = flags.FlagValues()
  # sys_argv: the override flags are defined from the command line when the flag is.
  config_flags.DEFINE_config_file("config", flag_values=flag_values, sys_argv=argv)
  flag_values(argv)
  return flag_values.config.data.procedural


def test_by_default_the_target_draws_its_scenes_from_scene_as_before():
  """The default target's geometry is sample_scene(scene) on the stream generate_example's
  docstring names, as before target_scene existed (so renderings are unchanged)."""
  config = _tiny()
  for index in range(3):
    rng = np.random.default_rng([config.seed, 0, index + config.target_scene_offset, 0])
    scene = procedural.sample_scene(rng, config.scene.copy_and_resolve_references())
    labels, depth_m, _, _ = procedural.render_geometry(scene, 24, 40, config.camera)
    example = procedural.generate_example(config, "target", "train", index)
    np.testing.assert_array_equal(example["label"], labels)
    np.testing.assert_array_equal(example["depth"],
                                  procedural.depth_to_centimetres(depth_m, labels))


def test_a_command_line_override_of_target_scene_changes_only_the_target():
  """--config.data.procedural.target_scene.X=(tuple) changes the target's scenes, not the
  source's, and is what to_json() and copy_and_resolve_references() hold."""
  default = _parse()
  shifted = _parse("--config.data.procedural.target_scene.trees_per_side=(6,9)")
  assert shifted.target_scene.trees_per_side == (6, 9)
  assert shifted.scene.trees_per_side == default.scene.trees_per_side == (0, 5)
  assert json.loads(shifted.to_json())["target_scene"]["trees_per_side"] == [6, 9]
  assert json.loads(shifted.to_json())["scene"]["trees_per_side"] == [0, 5]
  assert shifted.copy_and_resolve_references().target_scene.trees_per_side == (6, 9)
  default, shifted = _tiny(default), _tiny(shifted)
  assert _same(_scenes(default, "source"), _scenes(shifted, "source"))
  assert not _same(_scenes(default, "target"), _scenes(shifted, "target"))


@pytest.mark.parametrize("order", ["scene_first", "target_first"])
def test_a_change_of_scene_reaches_both_domains_unless_the_target_overrides_it(order):
  scene_flag = "--config.data.procedural.scene.trees_per_side=(6,9)"
  target_flag = "--config.data.procedural.target_scene.trees_per_side=(1,2)"
  both = _parse(scene_flag)
  assert both.target_scene.trees_per_side == (6, 9)
  assert json.loads(both.to_json())["target_scene"]["trees_per_side"] == [6, 9]
  default, both = _tiny(_parse()), _tiny(both)
  for domain in procedural.DOMAINS:
    assert not _same(_scenes(default, domain), _scenes(both, domain)), domain
  flags_in_order = (scene_flag, target_flag) if order == "scene_first" else (target_flag,
                                                                             scene_flag)
  overridden = _parse(*flags_in_order)
  assert overridden.scene.trees_per_side == (6, 9)
  assert overridden.target_scene.trees_per_side == (1, 2)


def _info(stored: dict):
  return type("Info", (), {"metadata": {pipeline.METADATA_PROCEDURAL_CONFIG: stored}})()


def _stored_before_target_scene(config) -> dict:
  """What a rendering by an earlier version stored: the JSON without target_scene."""
  stored = json.loads(config.to_json())
  del stored["target_scene"]
  return stored


def test_a_target_layout_other_than_the_rendered_one_is_refused():
  config, shifted = procedural_config(), procedural_config()
  shifted.target_scene.trees_per_side = (6, 9)
  shifted.target_scene.bushes = (1, 2)
  pipeline.check_procedural_config(_info(json.loads(config.to_json())), config)
  with pytest.raises(pipeline.DatasetUnusable,
                     match=r"fields differing: \['target_scene.bushes', "
                           r"'target_scene.trees_per_side'\]\); re-run `python -m "
                           r"gio_ada_jax.data.prepare --dataset procedural --overwrite --data_dir "
                           r"D` with this config"):
    pipeline.check_procedural_config(_info(json.loads(config.to_json())), shifted, "D")
  # ... and a rendering of the shifted config is refused for the default one, the other way.
  with pytest.raises(pipeline.DatasetUnusable, match=r"\['target_scene.bushes', "):
    pipeline.check_procedural_config(_info(json.loads(shifted.to_json())), config)


def test_a_prepared_copy_by_an_earlier_version_is_refused_with_the_command_to_render_it(
    procedural_data_dir, tmp_path):
  """Real prepared files: metadata.json edited back to what an earlier version wrote (no
  target_scene) is refused, naming the fields and the command that renders it again."""
  data_dir = tmp_path / "data"
  shutil.copytree(procedural_data_dir, data_dir)
  for path in data_dir.glob("procedural/*/*/metadata.json"):
    metadata = json.loads(path.read_text())
    del metadata[pipeline.METADATA_PROCEDURAL_CONFIG]["target_scene"]
    path.write_text(json.dumps(metadata))
  config = test_config.get_config()
  for domain in procedural.DOMAINS:
    _, info = pipeline.open_split(str(data_dir), f"procedural/{domain}", "train")
    with pytest.raises(pipeline.DatasetUnusable, match=r"'target_scene.bushes', .*re-run "
                       r"`python -m gio_ada_jax.data.prepare --dataset procedural --overwrite"):
      pipeline.check_procedural_config(info, config.data.procedural)


def test_a_run_recorded_by_an_earlier_version_is_refused_in_one_line(tmp_path):
  """A workdir's config.json without target_scene (an earlier version's record) does not have
  this version's fields: each use is refused, naming a few and what to do."""
  config = test_config.get_config()
  recorded = json.loads(config.to_json_best_effort())
  recorded["data"]["procedural"] = _stored_before_target_scene(config.data.procedural)
  (tmp_path / run_config.RECORD).write_text(json.dumps(recorded))
  for use in run_config.USES:
    with pytest.raises(ConfigError, match=r"config.json does not have this version's config "
                       r"fields \(53 differ: data.procedural.target_scene.building_depth_m, "
                       r"data.procedural.target_scene.building_gap_m, data.procedural."
                       r"target_scene.building_gap_probability, ...\): an earlier version of "
                       r"gio_ada_jax wrote it. Use that version for this workdir, or start a new "
                       r"one.$"):
      run_config.check_matches(config, str(tmp_path), use)


# ------------------------------------------------------------ configs/procedural_layout_shift.py


def test_the_layout_shift_keeps_the_demo_source_and_shifts_the_target():
  """The source is the demo's image for image; the target's class frequencies move as the
  config's docstring says (50 scenes per domain at the demo size, as docs/data.md measures)."""
  shift, base = procedural_layout_shift.get_config(), demo.get_config()
  assert shift.data.procedural.scene.to_dict() == base.data.procedural.scene.to_dict()
  assert _same(_scenes(shift.data.procedural, "source", 3),
               _scenes(base.data.procedural, "source", 3))
  overridden = sorted(k for k, v in shift.data.procedural.target_scene.items()
                      if v != shift.data.procedural.scene[k])
  assert len(overridden) == 16, overridden
  fractions = {domain: procedural.class_pixel_fractions(shift.data.procedural, domain, "train",
                                                        50) for domain in procedural.DOMAINS}
  change = dict(zip(procedural.VKITTI_KITTI_10.class_names,
                    (fractions["target"] - fractions["source"]) * 100))
  assert change["building"] < -5 and change["car"] > 5, change
  assert change["vegetation"] > 2 and change["sky"] > 2 and change["truck"] < -2, change
  assert fractions["source"].min() > 0 and fractions["target"].min() > 0
  assert fractions["source"].sum() == pytest.approx(1.0)


def test_class_frequencies_script_prints_the_table(tmp_path):
  run = lambda *args: subprocess.run(  # noqa: E731
      [sys.executable, str(REPO / "dev" / "class_frequencies.py"), *args], cwd=REPO,
      capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"},
      check=False)
  result = run("--num_scenes=2", "--config.data.procedural.height=16",
               "--config.data.procedural.width=32")
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert lines[0] == "2 train scenes per domain at 16x32"
  assert lines[1] == "| class | source % | target % | target - source |"
  assert len(lines) == 3 + 10 and lines[3].startswith("| road | ")
  result = run("--num_scenes=0")
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert "class_frequencies: --num_scenes=0; give at least 1." in result.stderr
