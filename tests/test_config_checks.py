"""The paper's settings a run must not change silently: ImageNet initialisation, the training
length in epochs, the global mini-batch, and fields that no longer exist."""

import math
import os
import pathlib
import subprocess
import sys

import pytest

from configs import synthia_to_cityscapes, vkitti_to_kitti
from configs import test as test_config
from gio_ada_jax import config_checks, trainer
from gio_ada_jax.data import pipeline

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
  home = tmp_path / "torch_home"
  home.mkdir()
  monkeypatch.setenv("TORCH_HOME", str(home))
  return home


def test_paper_config_refuses_to_start_without_the_vgg16_weights(empty_torch_home, tmp_path):
  """Before reading data or compiling: nothing is prepared here, and the error is the VGG's."""
  config = vkitti_to_kitti.get_config()
  config.data.data_dir = str(tmp_path / "no_data")
  want = str(empty_torch_home / "hub" / "checkpoints" / "vgg16-397923af.pth")
  with pytest.raises(config_checks.ConfigError) as error:
    trainer.train_and_evaluate(config, str(tmp_path / "run"))
  message = str(error.value)
  assert want in message
  assert "torchvision.models.vgg16(weights='IMAGENET1K_V1')" in message
  assert config_checks.VGG16_URL in message
  assert "--config.model.task_net.encoder_init=random" in message
  assert not (tmp_path / "run").exists()


def test_train_py_says_so_and_exits_2(empty_torch_home, tmp_path):
  env = {**os.environ, "TORCH_HOME": str(empty_torch_home), "JAX_PLATFORMS": "cpu"}
  result = subprocess.run(
      [sys.executable, "train.py", "--config", "configs/synthia_to_cityscapes.py",
       "--workdir", str(tmp_path / "run")],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-2000:]
  assert "needs torchvision's VGG16 file" in result.stderr
  assert "Traceback" not in result.stderr


def test_train_py_refuses_an_empty_workdir(tmp_path):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  result = subprocess.run(
      [sys.executable, str(REPO / "train.py"), "--config", str(REPO / "configs/test.py"),
       "--workdir="], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-2000:]
  assert "--workdir is empty" in result.stderr
  assert not list(tmp_path.iterdir())  # nothing written where it was started


def test_vgg16_path_resolution(empty_torch_home, monkeypatch, tmp_path):
  task_net = vkitti_to_kitti.get_config().model.task_net
  cached = empty_torch_home / "hub" / "checkpoints" / "vgg16-397923af.pth"
  cached.parent.mkdir(parents=True)
  cached.write_bytes(b"weights")
  assert config_checks.vgg16_weights_path(task_net) == str(cached)
  monkeypatch.delenv("TORCH_HOME")
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  with pytest.raises(config_checks.ConfigError, match=str(tmp_path / "xdg" / "torch" / "hub")):
    config_checks.vgg16_weights_path(task_net)
  task_net.vgg16_weights = str(cached)  # an explicit path
  assert config_checks.vgg16_weights_path(task_net) == str(cached)
  task_net.encoder_init = "random"  # the deliberate opt-out: no file needed
  task_net.vgg16_weights = str(tmp_path / "missing.pth")
  assert config_checks.vgg16_weights_path(task_net) is None
  task_net.encoder_init = ""
  with pytest.raises(config_checks.ConfigError, match="model.task_net.encoder_init=''"):
    config_checks.vgg16_weights_path(task_net)


def test_paper_configs_are_the_papers_settings():
  for module in (vkitti_to_kitti, synthia_to_cityscapes):
    config = module.get_config()
    assert config.model.task_net.encoder_init == "imagenet"
    assert (config.train.num_epochs, config.train.num_steps) == (10, 0)
    assert config.data.global_batch == 1
    assert config.data.sky_depth == "far"
    assert (config.train.lambda_depth, config.train.lambda_input,
            config.train.lambda_output) == (0.1, 0.1, 0.001)
    assert config.train.learning_rate == 2e-4 and config.data.random_flip


def test_vkitti_training_length_is_10_epochs_of_the_prepared_split(tmp_path, capsys):
  pytest.importorskip("tensorflow_datasets")
  from gio_ada_jax.data import prepare  # pylint: disable=g-import-not-at-top
  from tests import fake_datasets  # pylint: disable=g-import-not-at-top
  fake_datasets.write_vkitti_131(tmp_path / "raw", variations=("clone", "fog"), frames=3)
  prepare.prepare("vkitti", str(tmp_path / "data"), vkitti_to_kitti.get_config(),
                  str(tmp_path / "raw"))
  config = vkitti_to_kitti.get_config()
  config.data.data_dir = str(tmp_path / "data")
  config.data.global_batch = 4  # the 4 simulated devices of `make test`
  resolved = trainer.with_training_length(config)
  assert resolved.train.num_steps == 15  # ceil(10 epochs * 6 images / 4 a step)
  assert (config.train.num_epochs, config.train.num_steps) == (10, 0)  # the input is kept
  printed = capsys.readouterr().out
  assert "Training for 15 steps (10 epochs of the 6 images of vkitti's prepared train split)" \
      in printed
  assert "global batch 4 source + 4 target images (1 of each per device on 4 devices)" in printed
  config.train.num_epochs, config.train.num_steps = 0, 7
  assert trainer.with_training_length(config).train.num_steps == 7


def test_training_steps_rounds_the_last_batch_up():
  train = vkitti_to_kitti.get_config().train
  assert trainer.training_steps(train, 21260, 1) == 212600  # Virtual KITTI, the paper
  assert trainer.training_steps(train, 9400, 8) == 11750  # SYNTHIA at 8 images a step
  assert trainer.training_steps(train, 5, 4) == 13  # 12.5 -> 13
  train.num_epochs, train.num_steps = 0, 99
  assert trainer.training_steps(train, 5, 4) == 99


@pytest.mark.parametrize("epochs,steps,match", [
    (10, 100, "give the training length once"),
    (0, 0, "give the training length once"),
    (-1, 0, "positive"),
    (0, -5, "positive"),
])
def test_training_length_must_be_given_once(epochs, steps, match):
  config = test_config.get_config()
  config.train.num_epochs, config.train.num_steps = epochs, steps
  with pytest.raises(config_checks.ConfigError, match=match):
    config_checks.check_config(config)


@pytest.mark.parametrize("field,value", [
    ("train.log_every", 0), ("train.checkpoint_every", 0), ("train.keep_checkpoints", 0),
    ("train.image_every", 0), ("eval.per_device_batch", 0), ("cyclegan.num_steps", -1),
    ("cyclegan.translate_batch", 0), ("data.global_batch", -2), ("train.learning_rate", 0.0),
    ("cyclegan.learning_rate", -1e-4), ("train.lambda_output", -0.001),
    ("train.learning_rate", math.nan), ("train.poly_power", math.nan),
    ("train.lambda_depth", math.inf), ("model.width", 0.0), ("eval.depth_min_m", 0.0),
    ("eval.depth_min_m", -5.0), ("eval.depth_max_m", 1e-4), ("eval.depth_max_m", -1.0),
    ("seed", -1), ("seed", 2**31), ("train.num_steps", 10**16), ("cyclegan.num_steps", 2**31),
])
def test_each_bad_setting_is_named_before_anything_runs(field, value):
  config = test_config.get_config()
  parent, _, name = field.rpartition(".")
  node = config[parent] if parent else config
  node[name] = value
  with pytest.raises(config_checks.ConfigError, match=rf"{field}={value}: "):
    config_checks.check_config(config)
  node[name] = test_config.get_config()[parent][name] if parent else test_config.get_config().seed
  config_checks.check_config(config)


@pytest.mark.parametrize("field", sorted(config_checks.CHOICES))
def test_an_unknown_name_is_named_before_anything_runs(field):
  config = test_config.get_config()
  parent, _, name = field.rpartition(".")
  node = config
  for key in parent.split("."):
    node = node[key]
  node[name] = "typo"
  with pytest.raises(config_checks.ConfigError, match=rf"{field}='typo' is not known; choose "
                     rf"one of {', '.join(config_checks.CHOICES[field])}"):
    config_checks.check_config(config)


def test_procedural_fields_out_of_range_are_named_together():
  """data.procedural is checked at start like every other field: a zero texture scale (which
  would divide by zero while rendering), a reversed range, a fractional count, a field of view
  past 180 degrees, a short palette and a NaN are each named."""
  config = test_config.get_config()
  procedural = config.data.procedural
  procedural.source.texture_scale_m = (0.0,) * 10
  procedural.scene.bushes = (3, 1)
  procedural.target_scene.trees_per_side = (0.5, 2)
  procedural.camera.horizontal_fov_deg = 190.0
  procedural.target.palette = procedural.target.palette[:9]
  procedural.scene.truck_probability = float("nan")
  with pytest.raises(config_checks.ConfigError) as error:
    config_checks.check_config(config)
  for named in ("data.procedural.source.texture_scale_m=(0.0, ", "must be positive",
                "data.procedural.scene.bushes=(3, 1): a (lo, hi) range needs lo <= hi",
                "data.procedural.target_scene.bushes=(3, 1)",  # follows scene's
                "data.procedural.target_scene.trees_per_side=(0.5, 2): counts are whole",
                "data.procedural.camera.horizontal_fov_deg=190.0: every value must be between "
                "0 and 180", "data.procedural.target.palette=((92, 90, 90), ", "takes 10 entries",
                "data.procedural.scene.truck_probability=nan: must hold finite numbers"):
    assert named in str(error.value), named
  config_checks.check_config(test_config.get_config())  # the defaults pass


def test_prepare_refuses_a_procedural_config_out_of_range_before_rendering(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "gio_ada_jax.data.prepare", "--dataset", "procedural",
       "--config", "configs/test.py", "--config.data.procedural.source.gamma=0",
       "--data_dir", str(tmp_path / "data")], cwd=REPO, capture_output=True, text=True,
      timeout=300, check=False, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.stderr.strip() == ("prepare: the config cannot run: "
                                   "data.procedural.source.gamma=0.0: every value must be "
                                   "positive."), result.stderr
  assert not (tmp_path / "data").exists()


def test_several_bad_settings_are_named_together():
  config = test_config.get_config()
  config.train.log_every, config.train.keep_checkpoints = 0, 0
  config.train.num_steps = -3
  with pytest.raises(config_checks.ConfigError) as error:
    config_checks.check_config(config)
  for field in ("train.log_every=0", "train.keep_checkpoints=0", "train.num_steps=-3"):
    assert field in str(error.value)


def test_global_batch_splits_over_the_devices_or_says_why_not():
  assert pipeline.per_device_batch(8, 4) == 2
  assert pipeline.per_device_batch(1, 1) == 1
  for bad in (3, 0, -4):
    with pytest.raises(config_checks.ConfigError,
                       match=rf"data.global_batch={bad} does not split evenly over 4 devices"):
      pipeline.per_device_batch(bad, 4)


def test_train_iterator_reads_the_global_batch(procedural_data_dir):
  config = test_config.get_config()
  config.data.data_dir = procedural_data_dir
  config.data.global_batch = 8
  batch = next(pipeline.train_iterator(config, local_devices=4))
  assert batch["source"]["image"].shape[:2] == batch["target"]["image"].shape[:2] == (4, 2)
  config.data.global_batch = 6
  with pytest.raises(config_checks.ConfigError, match="global_batch=6"):
    pipeline.train_iterator(config, local_devices=4)


@pytest.mark.parametrize("field", ["data.per_device_batch", "model.task_net.pretrained_vgg16",
                                   "train.learning_rat", "data.procedural.scene.bush"])
def test_a_field_this_version_does_not_have_is_named(field):
  """An earlier version's field (data.per_device_batch, model.task_net.pretrained_vgg16) or a
  typo: ConfigDict accepts it, nothing would read it, so the check refuses it."""
  config = test_config.get_config()
  parent, _, name = field.rpartition(".")
  node = config
  for key in parent.split("."):
    node = node[key]
  node[name] = 1
  with pytest.raises(config_checks.ConfigError, match=rf"the config sets config\.{field}, which "
                     r"this version does not have: a typo, or a field of an earlier version, "
                     r"which nothing would read\. Remove it; configs/default.py lists every "
                     r"field"):
    config_checks.check_config(config)
  del node[name]
  config_checks.check_config(config)


def test_zero_global_batch_is_named():
  config = test_config.get_config()
  config.data.global_batch = 0
  with pytest.raises(config_checks.ConfigError, match="data.global_batch=0"):
    config_checks.check_config(config)


def test_an_unknown_sky_depth_is_named_before_anything_runs():
  config = test_config.get_config()
  config.data.sky_depth = "sky"
  with pytest.raises(config_checks.ConfigError, match="data.sky_depth='sky' is not known"):
    config_checks.check_config(config)


def test_train_py_refuses_data_of_an_older_version_in_one_line(tmp_path):
  old = tmp_path / "data" / "procedural" / "source" / "1.0.0"
  old.mkdir(parents=True)
  (old / "dataset_info.json").write_text("{}")
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  result = subprocess.run(
      [sys.executable, "train.py", "--config", "configs/test.py", "--workdir",
       str(tmp_path / "run"), f"--config.data.data_dir={tmp_path / 'data'}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-2000:]
  assert "data version 1.0.0" in result.stderr and "Re-run" in result.stderr
  assert "Traceback" not in result.stderr
