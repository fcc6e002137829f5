"""train.parallelism = "mesh": the step under jit over a (data, spatial) device mesh equals the
pmap step and one device (4 and 8 devices, 2 processes); checkpoints move between the modes;
the settings that cannot run are refused."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from gio_ada_jax import parallel
from gio_ada_jax.config_checks import ConfigError, check_config
from tests import mesh_worker
from tests.conftest import tiny_training_config, xla_flags_for
from tests.test_multihost import _free_port, _gloo_available

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "tests", "mesh_worker.py")
TIMEOUT_S = 900


def _assert_equal_runs(runs: dict[str, dict[str, np.ndarray]], reference: str = "single"):
  """Every run's losses at every step, parameters and Adam moments equal the reference's in
  float32, with Adam's eps at 1e-3 so that float32 decides every update (docs/development.md,
  "One batch per device")."""
  expected = runs[reference]
  for run, result in runs.items():
    assert sorted(result) == sorted(expected), run
    np.testing.assert_allclose(result["losses"], expected["losses"], rtol=1e-4, atol=1e-7,
                               err_msg=f"{run}: losses")
    for name, value in expected.items():
      np.testing.assert_allclose(result[name], value, rtol=1e-4, atol=2e-6,
                                 err_msg=f"{run}: {name}")
  # Leaves are named by their path in (params, opt_states): "[0]..." and "[1]...".
  assert any(name.startswith("[1]") for name in expected), "no optimiser state compared"


@pytest.fixture(scope="module")
def four_device_runs():
  assert jax.device_count() == 4, "make test simulates 4 CPU devices"
  setup = mesh_worker.setup()
  batches = mesh_worker.global_batches(4)
  runs = {"single": mesh_worker.run_single(setup, batches),
          "pmap": mesh_worker.run_layout(setup, batches, parallel.PmapLayout())}
  for shape in ("4x1", "2x2", "1x4"):
    runs[f"mesh {shape}"] = mesh_worker.run_layout(setup, batches, mesh_worker.mesh(shape))
  return runs


def test_every_mesh_shape_on_4_devices_steps_as_pmap_and_one_device(four_device_runs):
  _assert_equal_runs(four_device_runs)
  # The runs did train: every network moved away from its initial parameters.
  _, _, _, _, initial = mesh_worker.setup()
  start = {jax.tree_util.keystr(p): np.asarray(x)
           for p, x in jax.tree_util.tree_leaves_with_path((initial.params, initial.opt_states))}
  moved = {name.split("]")[1] + "]" for name, x in four_device_runs["mesh 1x4"].items()
           if name.startswith("[0]") and not np.array_equal(x, start[name])}  # parameters
  assert {"['generator']", "['task_net']", "['d_img']", "['d_out']"} <= moved, moved


def test_the_spatial_axis_splits_each_image_and_exchanges_halos():
  """With spatial = 4 each device holds a quarter of every image's rows, and the compiled
  step moves rows between neighbours (collective-permute): XLA partitions the convolutions
  instead of gathering whole images on every device."""
  layout = mesh_worker.mesh("1x4")
  setup = mesh_worker.setup()
  batch = layout.place_batch(mesh_worker.local_part(mesh_worker.global_batches(4)[0], layout))
  image = batch["source_image"]
  assert image.shape == (4, mesh_worker.HEIGHT, mesh_worker.WIDTH, 3)
  assert {shard.data.shape for shard in image.addressable_shards} == {
      (4, mesh_worker.HEIGHT // 4, mesh_worker.WIDTH, 3)}
  models, optimizers, train_config, variant, state = setup
  p_step = mesh_worker.step_lib.make_p_train_step(models, optimizers, train_config, variant,
                                                  layout)
  hlo = p_step.lower(layout.place_state(state), batch).compile().as_text()
  assert "collective-permute" in hlo


def _env(devices: int) -> dict[str, str]:
  env = dict(os.environ)
  env["XLA_FLAGS"] = xla_flags_for(devices)
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
  return env


def _load(path: str) -> dict[str, dict[str, np.ndarray]]:
  runs: dict[str, dict[str, np.ndarray]] = {}
  with np.load(path) as data:
    for key in data.files:
      run, name = key.split("|", 1)
      runs.setdefault(run, {})[name] = data[key]
  return runs


def _start(tmp_path, name: str, devices: int, shapes: str, out: str, *process: str):
  log = open(tmp_path / f"{name}.log", "w")  # a file: gloo's chatter cannot fill a pipe
  return subprocess.Popen([sys.executable, WORKER, "--shapes", shapes, "--out", out, *process],
                          cwd=REPO, env=_env(devices), stdout=log, stderr=subprocess.STDOUT), log


def _wait(tmp_path, workers) -> None:
  for name, (process, log) in workers.items():
    try:
      process.wait(timeout=TIMEOUT_S)
    finally:
      if process.poll() is None:
        for other, _ in workers.values():
          other.kill()
      log.close()
    if process.returncode != 0:
      for other, _ in workers.values():
        if other.poll() is None:
          other.kill()
      pytest.fail(f"{name} exited {process.returncode}:\n"
                  + (tmp_path / f"{name}.log").read_text()[-4000:])


def test_every_mesh_shape_on_8_devices_steps_as_pmap_and_one_device(tmp_path):
  out = str(tmp_path / "eight.npz")
  _wait(tmp_path, {"eight": _start(tmp_path, "eight", 8, "8x1,4x2,2x4,1x8", out)})
  runs = _load(out)
  assert sorted(runs) == ["mesh 1x8", "mesh 2x4", "mesh 4x2", "mesh 8x1", "pmap", "single"]
  _assert_equal_runs(runs)


def test_two_processes_of_2_devices_step_as_one_device(tmp_path):
  if not _gloo_available():
    pytest.skip("this jaxlib has no gloo CPU collectives, so CPU processes cannot reduce "
                "across each other")
  out, port = str(tmp_path / "two.npz"), _free_port()
  workers = {f"process {i} of 2": _start(
      tmp_path, f"process {i} of 2", 2, "4x1,2x2", out, "--process_id", str(i),
      "--num_processes", "2", "--port", str(port)) for i in range(2)}
  _wait(tmp_path, workers)
  runs = _load(out)
  assert sorted(runs) == ["mesh 2x2", "mesh 4x1", "single"]
  _assert_equal_runs(runs)


# ------------------------------------------------------------------------- the settings


def _train_config(**fields):
  config = mesh_worker.config()
  for name, value in fields.items():
    setattr(config.train, name, value)
  return config


@pytest.mark.parametrize("fields,message", [
    ({"mesh_spatial": 2}, "train.parallelism is 'pmap', which would ignore them"),
    ({"mesh_data": 2}, "train.parallelism is 'pmap', which would ignore them"),
    ({"parallelism": "mesh", "mesh_spatial": 3}, "must divide this process's 4 devices"),
    ({"parallelism": "mesh", "mesh_data": 3}, "is not the 4 devices there are"),
    ({"parallelism": "mesh", "mesh_data": 4, "mesh_spatial": 2}, "is not the 4 devices"),
])
def test_a_mesh_that_cannot_be_built_is_refused_naming_the_field(fields, message):
  """Fields that do not fit each other at start (check_config); a shape that does not fit the
  devices when the layout is built."""
  config = _train_config(**fields)
  with pytest.raises(ConfigError, match=message):
    check_config(config)
    parallel.layout_from_config(config.train)


@pytest.mark.parametrize("fields,shape", [
    ({"parallelism": "mesh"}, (4, 1)),
    ({"parallelism": "mesh", "mesh_spatial": 2}, (2, 2)),
    ({"parallelism": "mesh", "mesh_data": 1, "mesh_spatial": 4}, (1, 4)),
    ({"parallelism": "mesh", "mesh_data": 2, "mesh_spatial": 1}, None),
])
def test_the_config_shapes_the_mesh(fields, shape):
  """train.mesh_data x train.mesh_spatial over the 4 devices, -1 taking the rest; "pmap"
  (the default) gives pmap's layout."""
  if shape is None:
    with pytest.raises(ConfigError, match="train.mesh_data=2 x train.mesh_spatial=1"):
      parallel.layout_from_config(_train_config(**fields).train)
    return
  layout = parallel.layout_from_config(_train_config(**fields).train)
  assert isinstance(layout, parallel.MeshLayout)
  assert (layout.mesh.shape["data"], layout.mesh.shape["spatial"]) == shape
  assert layout.mesh.axis_names == ("data", "spatial")
  assert (layout.rows, layout.local_rows) == (shape[0], shape[0])
  assert isinstance(parallel.layout_from_config(_train_config().train), parallel.PmapLayout)


def test_a_spatial_axis_across_processes_is_refused():
  """Each spatial group must lie within a process: 2 local devices cannot hold spatial = 4."""
  with pytest.raises(ConfigError, match=r"train.mesh_spatial=4: .* divide this process's 2"):
    parallel.mesh_shape(_train_config(parallelism="mesh", mesh_spatial=4).train, 8, 2)
  assert parallel.mesh_shape(_train_config(parallelism="mesh", mesh_spatial=2).train, 8, 2) == (
      4, 2)


def test_static_checks_name_a_bad_parallelism_and_a_zero_data_axis():
  with pytest.raises(ConfigError, match="train.parallelism='shard_map' is not known"):
    check_config(_train_config(parallelism="shard_map"))
  with pytest.raises(ConfigError, match="train.mesh_data=0: must be -1"):
    check_config(_train_config(parallelism="mesh", mesh_data=0))
  with pytest.raises(ConfigError, match="train.mesh_spatial=0: must be at least 1"):
    check_config(_train_config(parallelism="mesh", mesh_spatial=0))


def test_a_height_or_batch_the_mesh_does_not_split_is_refused(procedural_data_dir, tmp_path):
  from gio_ada_jax import trainer  # pylint: disable=g-import-not-at-top
  config = tiny_training_config(procedural_data_dir, 1)
  config.train.parallelism, config.train.mesh_spatial = "mesh", 4
  config.data.height = 30
  with pytest.raises(ConfigError, match=r"data.height=30 does not split evenly over "
                                        r"train.mesh_spatial=4"):
    trainer.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run" / "checkpoints").exists()
  config.data.height, config.data.global_batch = 32, 3
  config.train.mesh_spatial = 2
  with pytest.raises(ConfigError, match=r"data.global_batch=3 does not split evenly over the "
                                        r"mesh's 2 data rows \(2 x 2"):
    trainer.train_and_evaluate(config, str(tmp_path / "run"))


# --------------------------------------------------------------------- checkpoints, resume


def _train(data_dir, workdir, num_steps, parallelism="pmap", data=-1, spatial=1):
  from gio_ada_jax import trainer  # pylint: disable=g-import-not-at-top
  config = tiny_training_config(data_dir, num_steps)
  config.train.adam_eps = 1e-3  # as mesh_worker.config() explains
  config.train.parallelism, config.train.mesh_data, config.train.mesh_spatial = (
      parallelism, data, spatial)
  return trainer.train_and_evaluate(config, str(workdir))


def _leaves(state) -> dict[str, np.ndarray]:
  return {jax.tree_util.keystr(p): np.asarray(x) for p, x in
          jax.tree_util.tree_leaves_with_path((state.params, state.opt_states))}


def test_checkpoints_move_between_pmap_and_mesh_runs(procedural_data_dir, tmp_path, capsys):
  """3 steps under one mode, resumed under the other to 6, equal 6 uninterrupted pmap steps;
  orbax restores the checkpoint into the mesh's replicated sharding and into single-device
  arrays, with the values that were saved."""
  from gio_ada_jax.train import checkpoint  # pylint: disable=g-import-not-at-top
  straight = _leaves(_train(procedural_data_dir, tmp_path / "straight", 6))
  for first, then, name in [(("mesh", -1, 1), ("pmap",), "mesh then pmap"),
                            (("pmap",), ("mesh", 1, 4), "pmap then spatial mesh")]:
    workdir = tmp_path / name.replace(" ", "_")
    at_3 = _train(procedural_data_dir, workdir, 3, *first)
    capsys.readouterr()
    final = _train(procedural_data_dir, workdir, 6, *then)
    out = capsys.readouterr().out
    assert "Resumed from step 3" in out, name
    # The start line says how the batch lies on the devices: the config reached the trainer.
    assert ("4 of each per row of a 1 x 4 (data x spatial) device mesh, each image's height "
            "split over 4 devices" if then[0] == "mesh" else "1 of each per device on 4 "
            "devices") in out, out
    # Twice the step parity's steps: rounding drifts further than in 3 steps (a mesh (2, 2)
    # then (1, 4) run measured 1.2e-5), and stays far below one step of a wrong resume (a
    # step's update is ~1e-4 here).
    for leaf, value in _leaves(final).items():
      np.testing.assert_allclose(value, straight[leaf], rtol=1e-4, atol=2e-5,
                                 err_msg=f"{name}: {leaf}")
    checkpointer = checkpoint.Checkpointer(str(workdir / "checkpoints"), keep=None)
    for layout in (parallel.PmapLayout(), mesh_worker.mesh("2x2")):
      template = layout.checkpoint_template(at_3)
      restored, data_state = checkpointer.restore(template, 3)
      assert data_state is not None
      assert int(restored.step) == 3
      arrays = jax.tree.leaves((restored.params, restored.opt_states))
      if layout.mode == "mesh":  # straight into the mesh's replicated sharding
        assert {x.sharding for x in arrays if np.ndim(x)} == {layout.replicated}, name
      else:  # host arrays, which the pmap layout then copies to every device
        assert all(isinstance(x, np.ndarray) for x in arrays), name
      for leaf, value in _leaves(restored).items():
        np.testing.assert_array_equal(value, _leaves(at_3)[leaf], err_msg=f"{name}: {leaf}")
    checkpointer.close()
