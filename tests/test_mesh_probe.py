"""train.parallelism = "mesh" probed as a careless user, a flaky cluster and a hostile file would:
a damaged checkpoint or one of another shape restored straight into a mesh's sharding says what
is wrong as under pmap."""

import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from gio_ada_jax.train import checkpoint, loop
from tests import mesh_worker
from tests.test_checkpoint import _truncate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def workdir(trained_run, tmp_path):
  """A copy of the trained run's workdir (checkpoints 3 and 6, export)."""
  path = tmp_path / "work"
  shutil.copytree(trained_run[1], path)
  return path


def test_a_damaged_checkpoint_under_a_mesh_names_the_array_it_cannot_read(
    trained_run, workdir, capsys):
  """orbax's read into the mesh's sharding says "Encountered error while reading array index"
  and a TensorStore spec; the message names the array and the file instead, as under pmap, and
  the run resumes from the previous checkpoint, into the mesh's replicated sharding."""
  _truncate(workdir / "checkpoints" / "6")
  layout = mesh_worker.mesh("2x2")
  checkpointer = checkpoint.Checkpointer(str(workdir / "checkpoints"), keep=None)
  try:
    restored = loop.resume(checkpointer, layout.checkpoint_template(trained_run[0]),
                           str(workdir))
  finally:
    checkpointer.close()
  out = capsys.readouterr().out
  assert restored.step == 3
  assert (f"Skipped checkpoint {workdir / 'checkpoints' / '6'}: it cannot be restored "
          "(ValueError: OUT_OF_RANGE: Error reading ") in out, out
  assert "TensorStore" not in out and "pybind11" not in out, out
  assert f"moved it to {workdir / 'checkpoints_unrestorable' / '6'}" in out
  placed = layout.place_state(restored.state)
  assert {x.sharding for x in jax.tree.leaves(placed.params)} == {layout.replicated}


def test_a_checkpoint_of_another_shape_under_a_mesh_names_the_arrays(trained_run, workdir):
  """A config whose networks have other shapes (an allowed model.width change, say): orbax's
  read into a sharding refuses with "Requested shape ... set `strict=False`", naming no array;
  the error names the arrays and both shapes, as under pmap."""
  state = trained_run[0]
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: np.zeros((8,), x.dtype) if jax.tree_util.keystr(path) ==
      "['d_img']['conv_0']['bias']" else x, state.params)
  template = mesh_worker.mesh("1x4").checkpoint_template(state.replace(params=params))
  checkpointer = checkpoint.Checkpointer(str(workdir / "checkpoints"), keep=None)
  try:
    with pytest.raises(checkpoint.UnrestorableCheckpoint) as error:
      checkpointer.restore(template, 6)
  finally:
    checkpointer.close()
  assert str(error.value) == (
      f"{workdir / 'checkpoints' / '6'}: its arrays have other shapes than this config's: "
      ".params['d_img']['conv_0']['bias'] (4,) (config: (8,))")


def test_cg_under_a_mesh_says_its_cyclegan_stage_needs_pmap_s_batch_split(
    procedural_data_dir, tmp_path):
  """A spatial mesh takes data.global_batch=1 (one data row); the 'cg' CycleGAN stage, which
  trains under pmap over the 4 devices, cannot: the error says it is that stage, before it
  trains or writes anything."""
  from configs import test  # pylint: disable=g-import-not-at-top
  from gio_ada_jax.config_checks import ConfigError  # pylint: disable=g-import-not-at-top
  from gio_ada_jax import trainer  # pylint: disable=g-import-not-at-top
  config = test.get_config("cg,joint")
  config.data.data_dir = procedural_data_dir
  config.data.global_batch = 1
  config.train.parallelism, config.train.mesh_spatial = "mesh", 4
  with pytest.raises(ConfigError) as error:
    trainer.train_and_evaluate(config, str(tmp_path / "run"))
  assert str(error.value).startswith(
      "the 'cg' variant's CycleGAN stage trains under pmap, one slice of the batch per device, "
      "whatever train.parallelism ('mesh' here): data.global_batch=1 does not split evenly over "
      "4 devices; set it to a positive multiple of 4"), error.value
  checkpoints = tmp_path / "run" / "cyclegan" / "checkpoints"
  assert not checkpoints.exists() or not any(checkpoints.iterdir())


def test_pictures_under_a_spatial_mesh_predict_only_the_examples_shown():
  """Under a 1 x 4 mesh the loop's first row is the whole global batch, which the step split
  over 4 devices; the pictures' one-device forward pass takes only the NUM_PICTURES examples
  TensorBoard shows, not all of them."""
  from gio_ada_jax.train import summaries  # pylint: disable=g-import-not-at-top
  layout = mesh_worker.mesh("1x4")
  models, _, _, variant, state = mesh_worker.setup()
  global_batch = mesh_worker.global_batches(4)[0]
  row = layout.first_row(layout.place_batch(mesh_worker.local_part(global_batch, layout)))
  assert row["source_image"].shape[0] == 4
  shown = summaries.pictures(state.params, row, models, variant, 10)
  assert {name: x.shape[0] for name, x in shown.items()} == {name: 2 for name in shown}
  assert summaries.NUM_PICTURES == 2  # what write_pictures shows
  np.testing.assert_array_equal(
      shown["source"], summaries.image_to_uint8(global_batch["source_image"][:2]))


@pytest.mark.parametrize("command", ["train.py", "evaluate.py"])
def test_a_mesh_shape_that_is_not_a_whole_number_is_one_line_and_exit_2(command, tmp_path):
  """absl refused --config.train.mesh_data=2.5 in two lines with exit status 1; now one line
  naming the flag, exit status 2, as every other setting the user must fix, and nothing is
  written."""
  result = subprocess.run(
      [sys.executable, command, "--config", "configs/test.py", "--workdir",
       str(tmp_path / "run"), "--config.train.parallelism=mesh", "--config.train.mesh_data=2.5"],
      cwd=REPO, capture_output=True, text=True, check=False, timeout=300)
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.stderr.strip().splitlines()[-1] == (
      f"{command}: flag --config.train.mesh_data=2.5: invalid literal for int() with base 10: "
      "'2.5'"), result.stderr[-2000:]
  assert "Traceback" not in result.stderr and "FATAL" not in result.stderr
  assert not (tmp_path / "run").exists()
