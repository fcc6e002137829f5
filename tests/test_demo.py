"""The demo pipeline end to end on the tiny procedural benchmark: four variants trained for a
step each, evaluated, the table, its chart and both figures (titled, with a class key)
written."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("tensorflow_datasets")

from gio_ada_jax import demo, images  # noqa: E402
from gio_ada_jax.data import labels  # noqa: E402
from tests.conftest import tiny_training_config  # noqa: E402


def test_demo_writes_the_table_and_the_figures(procedural_data_dir, tmp_path, capsys):
  config = tiny_training_config(procedural_data_dir, 1)
  config.train.checkpoint_every = 1
  table = demo.run(config, str(tmp_path), seeds=[0], with_oracle=False)
  lines = table.splitlines()
  assert lines[0].startswith("Table 1. Virtual KITTI -> KITTI") and lines[1] == ""
  assert lines[2].startswith("| Method | runs | road | building |") and "mIoU" in lines[2]
  assert [line.split(" | ")[0][2:] for line in lines[4:]] == (
      [f"paper: {row.label}" for row in demo.ROWS] + [f"here: {row.name}" for row in demo.ROWS])
  assert (tmp_path / "results.md").read_text().strip() == table
  results = json.loads((tmp_path / "results.json").read_text())
  assert [r["runs"] for r in results["rows"]] == [1, 1, 1, 1]
  assert results["paper"]["GIO-Ada (+sd,joint)"][-1] == 53.5
  gap, title = images.PANEL_GAP, images.TITLE_HEIGHT
  space = labels.VKITTI_KITTI_10
  key = images.legend(list(space.class_names), list(space.colours), 4 * 48 + 3 * gap)
  figure3 = np.asarray(Image.open(tmp_path / "figure3_segmentation.png"))
  # column titles, 4 images x 4 tiles, the class key
  assert figure3.shape == (title + 4 * 32 + 3 * gap + key.shape[0], 4 * 48 + 3 * gap, 3)
  np.testing.assert_array_equal(figure3[-key.shape[0]:], key)
  figure4 = np.asarray(Image.open(tmp_path / "figure4_translation.png"))
  assert figure4.shape == (title + 4 * 32 + 3 * gap, 3 * 48 + 2 * gap, 3)
  chart = Image.open(tmp_path / "results.png")
  assert chart.format == "PNG" and chart.size[0] >= 800
  out = capsys.readouterr().out
  assert "[4/4] GIO-Ada (+sd,joint), seed 0" in out and "Outputs in" in out
  for folder in ("na_na", "+sd_na", "na_joint", "+sd_joint"):  # each run in its own workdir
    assert (tmp_path / "runs" / f"{folder}_seed0" / "eval" / "step_1.json").exists()


def test_column_titles_sit_above_their_columns_and_the_key_shows_every_class_colour():
  tile = np.zeros((30, 100, 3), np.uint8)
  titled = images.with_column_titles(images.panel([[tile, tile, tile]]), ["a", "", "long"], 100)
  strip = titled[:images.TITLE_HEIGHT]
  inked = [bool(np.any(strip[:, c * 104:c * 104 + 100] < 128)) for c in range(3)]
  assert inked == [True, False, True]  # text where a title is, none over the untitled column
  np.testing.assert_array_equal(titled[images.TITLE_HEIGHT:], images.panel([[tile] * 3]))
  space = labels.VKITTI_KITTI_10
  key = images.legend(list(space.class_names), list(space.colours), 300)
  assert key.shape[1] == 300 and key.shape[0] > 2 * images.FONT_SIZE  # wrapped onto rows
  colours = {tuple(c) for c in key.reshape(-1, 3)}
  assert set(map(tuple, space.colours)) <= colours


def test_the_demo_never_renders_over_a_data_folder_the_user_gave(procedural_data_dir, tmp_path):
  """The demo replaces another rendering only in its own OUT/data; a --config.data.data_dir
  holding another config's rendering is refused by prepare and kept."""
  from configs import test  # pylint: disable=g-import-not-at-top
  from gio_ada_jax import experiments  # pylint: disable=g-import-not-at-top
  from gio_ada_jax.data import formats  # pylint: disable=g-import-not-at-top
  user_data = tmp_path / "user_data"
  shutil.copytree(procedural_data_dir, user_data)
  before = sorted(str(p.relative_to(user_data)) for p in user_data.rglob("*"))
  config = test.get_config()
  config.data.procedural.num_train = 5  # another rendering than the one in the folder
  with pytest.raises(formats.DataError, match="rendered from another config.data.procedural"):
    experiments.ensure_procedural_data(config, str(user_data), own_folder=False)
  assert sorted(str(p.relative_to(user_data)) for p in user_data.rglob("*")) == before


@pytest.mark.parametrize("seeds", ["0,0", ""])
def test_repeated_or_no_seeds_are_refused_before_anything_runs(seeds, tmp_path):
  """A table's mean ± std is over distinct seeds; the same run twice would shrink the spread."""
  output = tmp_path / "demo"
  result = subprocess.run(
      [sys.executable, "-m", "gio_ada_jax.demo", f"--seeds={seeds}", f"--output_dir={output}"],
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), capture_output=True,
      text=True, timeout=300, check=False, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.stderr == (f"demo: --seeds={seeds}: give distinct integers, e.g. --seeds "
                           "0,1,2\n")
  assert not output.exists()


def test_a_seed_out_of_range_is_refused_before_anything_is_rendered(tmp_path):
  output = tmp_path / "demo"
  result = subprocess.run(
      [sys.executable, "-m", "gio_ada_jax.demo", "--seeds=0,-1", f"--output_dir={output}"],
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), capture_output=True,
      text=True, timeout=300, check=False, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.stderr.startswith("demo: the config cannot run: seed=-1: must be a whole number "
                                  "from 0 to 2**31 - 1") and "reuses the runs" not in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1 and not output.exists()
