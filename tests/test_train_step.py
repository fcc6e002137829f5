"""The GIO-Ada step: every ablation runs, phases are isolated, pmap equals one device."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import test as test_config
from gio_ada_jax import models as models_lib
from gio_ada_jax import variants
from gio_ada_jax.data import labels
from gio_ada_jax.images import colourise, image_to_uint8
from gio_ada_jax.train import state as state_lib
from gio_ada_jax.train import step as step_lib
from gio_ada_jax.train import summaries

HEIGHT, WIDTH = 32, 48  # the PatchGANs need >= 24 pixels per side


def _config(input_level="+sd", output_level="joint"):
  return test_config.get_config(f"{input_level},{output_level}")


def _batch(seed=0, batch=1):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 10, (batch, HEIGHT, WIDTH))
  labels[:, :4] = 255
  return {
      "source_image": rng.uniform(-1, 1, (batch, HEIGHT, WIDTH, 3)).astype(np.float32),
      "source_label": labels.astype(np.int32),
      "source_depth": rng.uniform(0, 1, (batch, HEIGHT, WIDTH, 1)).astype(np.float32),
      "source_depth_mask": (rng.random((batch, HEIGHT, WIDTH, 1)) > 0.2).astype(np.float32),
      "target_image": rng.uniform(-1, 1, (batch, HEIGHT, WIDTH, 3)).astype(np.float32),
  }


def _setup(config):
  variant = variants.from_config(config)
  models = models_lib.build_models(config.model, variant)
  state = state_lib.create_state(models, variant, config, jax.random.key(0), HEIGHT, WIDTH)
  return models, state


def _step(config, models, optimizers=None):
  optimizers = optimizers or state_lib.make_optimizers(config.train)
  return jax.jit(functools.partial(step_lib.train_step, models=models, optimizers=optimizers,
                                   objective=step_lib.objective_from_config(
                                       config.train, variants.from_config(config)),
                                   axis_name=None))


def _changed(before, after) -> dict[str, bool]:
  return {name: any(not np.array_equal(a, b) for a, b in
                    zip(jax.tree.leaves(before[name]), jax.tree.leaves(after[name])))
          for name in state_lib.NETWORKS}


# "cg" steps exactly as "na" (its CycleGAN translation happens before training:
# tests/test_cyclegan.py); the configs take it like every other level.
VARIANTS = ([(level, "joint") for level in variants.INPUT_LEVELS if level != "cg"]
            + [("+sd", level) for level in variants.OUTPUT_LEVELS if level != "joint"])


@pytest.mark.parametrize("input_level,output_level", VARIANTS,
                         ids=[f"{i}-{o}" for i, o in VARIANTS])
def test_every_ablation_variant_steps(input_level, output_level):
  config = _config(input_level, output_level)
  models, state = _setup(config)
  new_state, metrics = _step(config, models)(state, _batch())
  m = {k: float(v) for k, v in metrics.items()}
  # Equation 5 with the paper's weights (0.1, 0.1, 0.001), typed out; a level's terms are
  # exactly 0 when it is off, and positive (a real loss) when it is on.
  assert m["loss_g"] == pytest.approx(m["loss_seg"] + 0.1 * m["loss_depth"]
                                      + 0.1 * m["loss_g_input_adv"]
                                      + 0.001 * m["loss_g_output_adv"], rel=1e-6)
  assert m["loss_seg"] == pytest.approx(np.log(10), rel=0.01)  # untrained: log C
  for name, on in (("loss_g_input_adv", input_level != "na"), ("loss_d_img", input_level != "na"),
                   ("loss_g_output_adv", output_level != "na"),
                   ("loss_d_out", output_level != "na")):
    assert (m[name] > 0.1) if on else (m[name] == 0.0), (name, m[name])
  for leaf in jax.tree.leaves(new_state.params):
    assert np.all(np.isfinite(leaf))
  changed = _changed(state.params, new_state.params)
  uses_generator = input_level != "na"
  assert changed == {"generator": uses_generator, "task_net": True, "d_img": uses_generator,
                     "d_out": output_level != "na"}
  assert int(new_state.step) == 1
  if output_level == "sep":
    assert set(new_state.params["d_out"]) == {"seg", "depth"}


def test_discriminator_update_does_not_depend_on_generator_side_weights():
  """D's update comes from its own losses only: the λs of the generator side do not reach it."""
  config = _config()
  models, state = _setup(config)
  after_small, _ = _step(config, models)(state, _batch())
  config.train.lambda_input, config.train.lambda_output = 5.0, 5.0
  after_large, _ = _step(config, models)(state, _batch())
  for name in ("d_img", "d_out"):
    for a, b in zip(jax.tree.leaves(after_small.params[name]),
                    jax.tree.leaves(after_large.params[name])):
      np.testing.assert_array_equal(a, b)
  assert _changed(after_small.params, after_large.params)["task_net"]


def test_generator_side_sees_discriminators_before_their_update():
  """G_img and G_task get the same update whether or not the discriminators learn this step."""
  config = _config()
  models, state = _setup(config)
  after, _ = _step(config, models)(state, _batch())
  frozen = state_lib.make_optimizers(config.train)
  frozen["d_img"] = frozen["d_out"] = __import__("optax").set_to_zero()
  after_frozen_d, _ = _step(config, models, frozen)(state, _batch())
  for name in ("generator", "task_net"):
    for a, b in zip(jax.tree.leaves(after.params[name]),
                    jax.tree.leaves(after_frozen_d.params[name])):
      np.testing.assert_array_equal(a, b)
  assert not _changed(state.params, after_frozen_d.params)["d_out"]


def test_the_step_the_tensorboard_pictures_and_the_demo_share_one_forward_pass():
  """What the losses see (generator_loss's outputs) is step.forward's, and the TensorBoard
  pictures show the same tensors: x̂_s and the argmax of both predictions."""
  config = _config("+s")
  variant = variants.from_config(config)
  models, state = _setup(config)
  batch = _batch(seed=3)
  outputs = jax.jit(step_lib.forward, static_argnums=(0, 3))(models, state.params, batch,
                                                               variant)
  g_params = {k: state.params[k] for k in ("generator", "task_net")}
  d_params = {k: state.params[k] for k in ("d_img", "d_out")}
  objective = step_lib.objective_from_config(config.train, variant)
  _, (step_outputs, _) = jax.jit(functools.partial(
      step_lib.generator_loss, models=models, objective=objective))(g_params, d_params, batch)
  assert set(step_outputs) == set(outputs) == {"translated", "seg_s", "depth_s", "seg_t",
                                               "depth_t"}
  for name in outputs:
    np.testing.assert_allclose(step_outputs[name], outputs[name], rtol=1e-6, atol=1e-6)
  pictures = summaries.pictures(state.params, batch, models, variant, 10)
  space = labels.label_space_for(10)
  np.testing.assert_array_equal(pictures["source_translated"],
                                image_to_uint8(np.asarray(outputs["translated"])))
  np.testing.assert_array_equal(pictures["target_prediction"],
                                colourise(np.argmax(outputs["seg_t"], -1), space.palette()))
  np.testing.assert_array_equal(pictures["source_prediction"],
                                colourise(np.argmax(outputs["seg_s"], -1), space.palette()))


def test_the_objective_is_resolved_from_the_config_once():
  """The step holds plain numbers, not the ConfigDict: a config changed after the step was
  built does not change what it computes."""
  config = _config()
  variant = variants.from_config(config)
  objective = step_lib.objective_from_config(config.train, variant)
  assert objective == step_lib.Objective(variant, config.train.lambda_depth,
                                         config.train.lambda_input, config.train.lambda_output,
                                         config.train.gan_loss)
  assert hash(objective) == hash(step_lib.objective_from_config(config.train, variant))
  models, state = _setup(config)
  step = _step(config, models)
  config.train.lambda_depth = config.train.lambda_output = 50.0
  after, metrics = step(state, _batch())
  expected = (metrics["loss_seg"] + objective.lambda_depth * metrics["loss_depth"]
              + objective.lambda_input * metrics["loss_g_input_adv"]
              + objective.lambda_output * metrics["loss_g_output_adv"])
  np.testing.assert_allclose(metrics["loss_g"], expected, rtol=1e-6)
  assert int(after.step) == 1


def test_models_and_step_must_be_built_for_the_same_variant():
  """G_img built for one variant and stepped or initialised as another is an error, not a
  silent run with other inputs."""
  config = _config("+s")
  models, state = _setup(config)
  with pytest.raises(ValueError, match="use_labels, use_depth"):
    jax.jit(functools.partial(step_lib.train_step, models=models,
                              optimizers=state_lib.make_optimizers(config.train),
                              objective=step_lib.objective_from_config(
                                  config.train, variants.parse("+sd,joint")),
                              axis_name=None))(state, _batch())
  with pytest.raises(ValueError, match="use_labels, use_depth"):
    state_lib.init_params(models, variants.parse("gd,joint"), 10, jax.random.key(0), HEIGHT,
                          WIDTH)
  config.variant = "cyclegan,na"
  with pytest.raises(ValueError, match="config.variant"):
    variants.from_config(config)


def _device_batches(devices):
  """A different batch per device, with different numbers of ignored labels and of valid
  depth pixels: device k ignores k / devices of its label rows and masks out k / (2 devices)
  of its depth rows."""
  batches = []
  for k in range(devices):
    batch = _batch(seed=10 + k)
    batch["source_label"][:, :4] = np.random.default_rng(k).integers(0, 10, (1, 4, WIDTH))
    batch["source_label"][:, :HEIGHT * k // devices] = 255
    batch["source_depth_mask"][:] = 1.0
    batch["source_depth_mask"][:, :HEIGHT * k // (2 * devices)] = 0.0
    batches.append(batch)
  return batches


def test_pmap_with_a_batch_per_device_equals_one_device_on_their_concatenation():
  """4 devices, each with its own image, step as one device on the 4 images: the same losses,
  gradient norms, parameters and Adam moments after 3 steps. With equal batches everywhere a
  missing pmean (or a per-device loss normalisation) would not show; here each device's data,
  and its count of labelled and depth-valid pixels, differ. Adam's eps is 1e-3 (as in
  tests/multihost_worker.py): with the default 1e-8 an update of a gradient below float32's
  resolution of its sum is about lr * sign(g), which the other summation order can flip."""
  config = _config()
  config.train.adam_eps = 1e-3
  models, state = _setup(config)
  devices = jax.local_device_count()
  assert devices == 4, "make test simulates 4 CPU devices"
  p_step = step_lib.make_p_train_step(models, state_lib.make_optimizers(config.train),
                                      config.train, variants.from_config(config))
  single_step = _step(config, models)
  multi = jax.tree.map(lambda x: jnp.stack([x] * devices), state)
  single = state
  for step in range(3):
    per_device = _device_batches(devices) if step == 0 else [
        _batch(seed=100 * step + k) for k in range(devices)]
    stacked = {k: np.stack([b[k] for b in per_device]) for k in per_device[0]}
    concatenated = {k: np.concatenate([b[k] for b in per_device]) for k in per_device[0]}
    multi, multi_metrics = p_step(multi, stacked)
    single, single_metrics = single_step(single, concatenated)
    for name, value in single_metrics.items():
      np.testing.assert_allclose(np.asarray(multi_metrics[name]),
                                 np.full(devices, value), rtol=2e-5, atol=1e-7, err_msg=name)
  for name in state_lib.NETWORKS:
    ours = jax.tree.leaves((multi.params[name], multi.opt_states[name]))
    theirs = jax.tree.leaves((single.params[name], single.opt_states[name]))
    for a, b in zip(ours, theirs):
      a = np.asarray(a)
      assert all(np.array_equal(a[0], a[d]) for d in range(devices)), f"{name} replicas differ"
      np.testing.assert_allclose(a[0], b, rtol=1e-4, atol=2e-6, err_msg=name)


@pytest.mark.parametrize("config_file", ["default", "vkitti_to_kitti", "synthia_to_cityscapes",
                                         "cpu", "demo", "test"])
def test_benchmark_configs_take_every_variant(config_file):
  import importlib  # pylint: disable=g-import-not-at-top
  module = importlib.import_module(f"configs.{config_file}")
  assert module.get_config().variant == "+sd,joint"  # the paper's final model
  for input_level, output_level in VARIANTS + [("cg", "na")]:
    config = module.get_config(f"{input_level},{output_level}")
    assert config.variant == f"{input_level},{output_level}"
    assert variants.from_config(config) == variants.Variant(input_level, output_level)
  with pytest.raises(ValueError, match="INPUT,OUTPUT"):
    module.get_config("+sd")


def _with_scaled_seg_head(state, factor):
  """The state with the segmentation head's kernels `factor` times larger."""
  task_net = dict(state.params["task_net"])
  task_net["seg_head"] = jax.tree_util.tree_map_with_path(
      lambda path, leaf: leaf * factor if "kernel" in jax.tree_util.keystr(path) else leaf,
      task_net["seg_head"])
  return state.replace(params={**state.params, "task_net": task_net})


def _update(before, after, name):
  return np.concatenate([np.ravel(np.asarray(a) - np.asarray(b)) for a, b in
                         zip(jax.tree.leaves(after.params[name]),
                             jax.tree.leaves(before.params[name]))])


def test_mixed_precision_step_keeps_float32_params_and_losses():
  """model.dtype=bfloat16: bf16 compute (not float32's), float32 parameters, optimiser states
  and losses, and results close to float32's where they say something about the network."""
  config = _config()
  config.model.dtype = "bfloat16"
  models, state = _setup(config)
  # An untrained network's loss sits at log C whatever it computes; with the segmentation
  # head scaled up, the loss (about 9.4 here) depends on every activation of the network.
  state = _with_scaled_seg_head(state, 3000.0)
  new_state, metrics = _step(config, models)(state, _batch())
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(new_state.params))
  assert all(leaf.dtype in (jnp.float32, jnp.int32) for leaf in
             jax.tree.leaves(new_state.opt_states))
  assert all(v.dtype == jnp.float32 for v in metrics.values())
  fp32_models = models_lib.build_models(_config().model, variants.FINAL)
  fp32_state, fp32_metrics = _step(_config(), fp32_models)(state, _batch())
  assert float(fp32_metrics["loss_seg"]) > 3 * np.log(10)
  for name in ("loss_seg", "loss_g"):
    relative = abs(float(metrics[name]) / float(fp32_metrics[name]) - 1)
    # Measured 1.1e-3: bf16's rounding, not float32 under another name, and not garbage.
    assert 1e-5 < relative < 1e-2, (name, relative)
  # Adam's first update is lr * sign(gradient): bf16's gradients have float32's signs
  # (measured: 97% of the task network's updates within 1e-5 of float32's).
  agree = np.abs(_update(state, new_state, "task_net") - _update(state, fp32_state, "task_net"))
  assert np.mean(agree < 1e-5) > 0.9


def test_pretrained_vgg16_initialises_the_encoder(tmp_path):
  """model.task_net.pretrained_vgg16: torchvision's layout, loaded strictly into the encoder."""
  torch = pytest.importorskip("torch")
  from gio_ada_jax import config_checks  # pylint: disable=g-import-not-at-top
  from gio_ada_jax import trainer  # pylint: disable=g-import-not-at-top
  from gio_ada_jax.interop import convert, torch_ref  # pylint: disable=g-import-not-at-top
  config = _config()
  models, state = _setup(config)
  torch.manual_seed(0)
  vgg = torch_ref.VGG16(width=config.model.width)
  path = str(tmp_path / "vgg16.pth")
  torch.save(vgg.state_dict(), path)
  loaded = trainer.with_pretrained_encoder(state, path, state_lib.make_optimizers(config.train))
  want = np.transpose(vgg.state_dict()["features.28.weight"].numpy(), (2, 3, 1, 0))
  np.testing.assert_array_equal(loaded.params["task_net"]["encoder"]["conv5_3"]["kernel"], want)
  np.testing.assert_array_equal(loaded.params["task_net"]["encoder"]["fc6"]["kernel"],
                                state.params["task_net"]["encoder"]["fc6"]["kernel"])
  vgg_sd = convert.load_torch_checkpoint(path)
  vgg_sd["features.99.weight"] = np.zeros((1,), np.float32)
  convert.save_torch_checkpoint(vgg_sd, path)
  # train.py prints a ConfigError and exits 2: the message names the field and what to do.
  with pytest.raises(config_checks.ConfigError,
                     match=r"(?s)model\.task_net\.vgg16_weights .*features\.99\.weight.*"
                           r"torchvision's ImageNet VGG16 file.*encoder_init=random"):
    trainer.with_pretrained_encoder(state, path, state_lib.make_optimizers(config.train))
  torch.save({"features.0.weight": torch.zeros(1), "epoch": np.float64(3.0)}, path)  # pickles numpy
  with pytest.raises(config_checks.ConfigError,
                     match=r"^model\.task_net\.vgg16_weights: .*vgg16\.pth: refused"):
    trainer.with_pretrained_encoder(state, path, state_lib.make_optimizers(config.train))


@pytest.mark.parametrize("schedule", ["constant", "poly"])
def test_every_optimizer_follows_the_learning_rate_schedule(schedule):
  """train.lr_schedule: "poly" decays base * (1 - step / num_steps)^poly_power to 0 at the last
  step, in the logged rate and in every network's Adam; "constant" stays at the base. With a
  constant gradient Adam's update is -lr(step) (m_hat / sqrt(v_hat) = 1), so each update shows
  the rate it used."""
  train = test_config.get_config().train
  train.lr_schedule, train.num_steps, train.learning_rate, train.poly_power = (
      schedule, 10, 1e-2, 0.9)
  expected = [1e-2 * ((1 - k / 10) ** 0.9 if schedule == "poly" else 1.0) for k in range(11)]
  assert [state_lib.learning_rate_at(train, k) for k in range(11)] == pytest.approx(expected)
  assert state_lib.learning_rate_at(train, 10) == (0.0 if schedule == "poly" else 1e-2)
  for name, optimizer in state_lib.make_optimizers(train).items():
    params = {"w": jnp.zeros(3)}
    opt_state = optimizer.init(params)
    for k in range(10):
      updates, opt_state = optimizer.update({"w": jnp.ones(3)}, opt_state, params)
      np.testing.assert_allclose(np.asarray(updates["w"]), -expected[k], rtol=1e-4,
                                 err_msg=f"{name} at step {k}")
