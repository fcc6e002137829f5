"""The demo pipeline end to end on the tiny procedural benchmark: four variants trained for a
step each, evaluated, the table and both figures written."""

import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("tensorflow_datasets")

from gio_ada_jax import demo  # noqa: E402
from tests.conftest import tiny_training_config  # noqa: E402


def test_demo_writes_the_table_and_the_figures(procedural_data_dir, tmp_path, capsys):
  config = tiny_training_config(procedural_data_dir, 1)
  config.train.checkpoint_every = 1
  table = demo.run(config, str(tmp_path), seeds=[0], with_oracle=False)
  lines = table.splitlines()
  assert lines[0].startswith("| Method | runs | road | building |") and "mIoU" in lines[0]
  assert [line.split(" | ")[0][2:] for line in lines[2:]] == [row.name for row in demo.ROWS]
  assert (tmp_path / "results.md").read_text().strip() == table
  results = json.loads((tmp_path / "results.json").read_text())
  assert [r["runs"] for r in results] == [1, 1, 1, 1]
  gap = 4  # images.PANEL_GAP
  figure3 = np.asarray(Image.open(tmp_path / "figure3_segmentation.png"))
  assert figure3.shape == (4 * 32 + 3 * gap, 4 * 48 + 3 * gap, 3)  # 4 images x 4 tiles
  figure4 = np.asarray(Image.open(tmp_path / "figure4_translation.png"))
  assert figure4.shape == (4 * 32 + 3 * gap, 3 * 48 + 2 * gap, 3)  # source, translated, target
  out = capsys.readouterr().out
  assert "[4/4] GIO-Ada (+sd,joint), seed 0" in out and "Outputs in" in out
  for row in demo.ROWS:  # each run trained and was evaluated in its own workdir
    assert (tmp_path / "runs" / f"{row.key}_seed0" / "eval" / "step_1.json").exists()
