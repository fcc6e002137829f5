"""The Flax networks: construction from config, shapes, dtypes, imports without torch."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gio_ada_jax import models, variants
from gio_ada_jax.errors import ConfigError
from gio_ada_jax.models.task_net import ASPP

FINAL = variants.FINAL  # G_img on image, labels and depth


def _init_and_apply(module, *args):
  variables = jax.jit(module.init)(jax.random.key(0), *args)
  return variables, jax.jit(module.apply)(variables, *args)


def _param_count(variables):
  return sum(np.size(p) for p in jax.tree.leaves(variables["params"]))


def test_build_models_from_config_gives_all_four_networks(tiny_model_config):
  built = models.build_models(tiny_model_config, FINAL)
  assert isinstance(built.generator, models.ImageTransformNet)
  assert isinstance(built.task_net, models.TaskNet)
  assert isinstance(built.d_img, models.PatchDiscriminator)
  assert isinstance(built.d_out, models.PatchDiscriminator)
  tiny_model_config.d_out.kind = "fc"
  assert isinstance(models.build_models(tiny_model_config, FINAL).d_out, models.FCDiscriminator)


def test_gio_ada_forward_shapes_on_kitti_like_odd_size(tiny_model_config):
  """G_img keeps 93x311 (not a multiple of 4); G_task outputs at input size; D_out on C+1."""
  built = models.build_models(tiny_model_config, FINAL)
  num_classes, (h, w) = tiny_model_config.num_classes, (93, 311)
  images = jnp.zeros((2, h, w, 3))
  labels = jnp.full((2, h, w), 255, jnp.int32).at[:, 50:].set(3)
  depth = jnp.full((2, h, w, 1), 0.5)
  _, translated = _init_and_apply(built.generator, images, labels, depth)
  assert translated.shape == (2, h, w, 3)
  _, (seg_logits, depth_pred) = _init_and_apply(built.task_net, translated)
  assert seg_logits.shape == (2, h, w, num_classes) and depth_pred.shape == (2, h, w, 1)
  joint = jnp.concatenate([jax.nn.softmax(seg_logits), depth_pred], axis=-1)
  _, d_out_logits = _init_and_apply(built.d_out, joint)
  _, d_img_logits = _init_and_apply(built.d_img, translated)
  # PatchGAN: three k4 s2 p1 convs (floor halving), then two k4 s1 p1 convs losing a pixel each.
  expected_patch = (2, h // 2 // 2 // 2 - 2, w // 2 // 2 // 2 - 2, 1)
  assert d_out_logits.shape == d_img_logits.shape == expected_patch


def test_residual_generator_starts_as_the_identity_and_can_learn(tiny_model_config):
  """generator.residual_output: x̂ = x at initialisation; the head still gets gradients."""
  tiny_model_config.generator.residual_output = True
  built = models.build_models(tiny_model_config, FINAL)
  images = jax.random.uniform(jax.random.key(1), (2, 16, 24, 3), minval=-1.0, maxval=1.0)
  labels = jnp.zeros((2, 16, 24), jnp.int32)
  depth = jnp.full((2, 16, 24, 1), 0.5)
  variables, translated = _init_and_apply(built.generator, images, labels, depth)
  np.testing.assert_array_equal(np.asarray(translated), np.asarray(images))

  def darkness(params):
    return -jnp.mean(built.generator.apply({"params": params}, images, labels, depth))

  head_grads = jax.grad(darkness)(variables["params"])["head"]
  assert float(jnp.abs(head_grads["kernel"]).max()) > 0
  tiny_model_config.generator.residual_output = False
  _, plain = _init_and_apply(models.build_models(tiny_model_config, FINAL).generator, images,
                             labels, depth)
  assert not np.allclose(np.asarray(plain), np.asarray(images), atol=0.1)


@pytest.mark.parametrize("subpixel", [False, True])
def test_transposed_conv_forms_equal_flax_conv_transpose(subpixel):
  """Both forms of G_img's upsampling are nn.ConvTranspose(k3, s2, padding (1, 2)), values
  and gradients (odd sizes: the crop to the down path's size happens outside)."""
  from gio_ada_jax.models.generator import ConvTranspose2x  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  x = jax.random.normal(jax.random.key(1), (2, 5, 7, 6))
  reference = nn.ConvTranspose(4, (3, 3), strides=(2, 2), padding=((1, 2), (1, 2)))
  params = jax.tree.map(lambda p: p + 0.1, reference.init(jax.random.key(0), x))
  module = ConvTranspose2x(4, subpixel=subpixel)
  np.testing.assert_allclose(module.apply(params, x), reference.apply(params, x), atol=1e-5)

  def grads(apply):
    return jax.grad(lambda p, x: jnp.sum(jnp.sin(apply(p, x))), argnums=(0, 1))(params, x)

  for got, want in zip(jax.tree.leaves(grads(module.apply)),
                       jax.tree.leaves(grads(reference.apply))):
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_generator_upsampling_setting_picks_the_form():
  """(An unknown name is refused at start: test_config_checks.py's test of every CHOICES field.)"""
  assert models.subpixel_upsampling("auto") == (jax.default_backend() == "cpu")
  assert models.subpixel_upsampling("subpixel") and not models.subpixel_upsampling("dilated")


def test_generator_requires_the_inputs_its_variant_uses(tiny_model_config):
  built = models.build_models(tiny_model_config, FINAL)
  with pytest.raises(ValueError, match="use_labels"):
    built.generator.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), None, jnp.zeros((1, 8, 8, 1)))


def test_generator_conditioning_changes_the_input_channels(tiny_model_config):
  plain = models.build_models(tiny_model_config, variants.parse("gd,joint")).generator
  variables = jax.eval_shape(plain.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  assert variables["params"]["stem"]["kernel"].shape[2] == 3
  conditioned = models.build_models(tiny_model_config, FINAL).generator
  variables = jax.eval_shape(conditioned.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)),
                             jnp.zeros((1, 8, 8), jnp.int32), jnp.zeros((1, 8, 8, 1)))
  assert variables["params"]["stem"]["kernel"].shape[2] == 3 + tiny_model_config.num_classes + 1


def test_width_multiplier_shrinks_every_network(default_model_config, tiny_model_config):
  for name in ("generator", "task_net", "d_img"):
    counts = []
    for config in (default_model_config, tiny_model_config):
      module = getattr(models.build_models(config, FINAL), name)
      args = [jnp.zeros((1, 32, 32, 3))]
      if name == "generator":
        args += [jnp.zeros((1, 32, 32), jnp.int32), jnp.zeros((1, 32, 32, 1))]
      shapes = jax.eval_shape(module.init, jax.random.key(0), *args)
      counts.append(sum(np.prod(s.shape) for s in jax.tree.leaves(shapes)))
    assert counts[1] < counts[0] / 50, name  # width 1/16: about 1/256 of the weights


def test_full_size_parameter_counts_match_upstream(default_model_config):
  """CycleGAN resnet_9blocks: 11,378,179; NLayerDiscriminator: 2,764,737 (3-channel input)."""
  built = models.build_models(default_model_config, variants.parse("gd,joint"))  # image only
  image = jnp.zeros((1, 32, 32, 3))
  count = lambda m, *a: sum(  # noqa: E731
      np.prod(s.shape) for s in jax.tree.leaves(jax.eval_shape(m.init, jax.random.key(0), *a)))
  assert count(built.generator, image) == 11_378_179
  assert count(built.d_img, image) == 2_764_737


def test_bf16_compute_stays_close_to_float32(tiny_model_config):
  """dtype=bfloat16 runs every network in bf16 with float32 params; outputs stay close."""
  h, w = 40, 56
  images = jax.random.uniform(jax.random.key(1), (1, h, w, 3), minval=-1, maxval=1)
  labels = jax.random.randint(jax.random.key(2), (1, h, w), 0, tiny_model_config.num_classes)
  depth = jax.random.uniform(jax.random.key(3), (1, h, w, 1))
  fp32 = models.build_models(tiny_model_config, FINAL)
  tiny_model_config.dtype = "bfloat16"
  bf16 = models.build_models(tiny_model_config, FINAL)
  variables = jax.jit(fp32.generator.init)(jax.random.key(0), images, labels, depth)
  out32 = fp32.generator.apply(variables, images, labels, depth)
  out16 = bf16.generator.apply(variables, images, labels, depth)
  assert out16.dtype == jnp.bfloat16
  # bf16's rounding (measured: max 0.014, mean 0.002 on outputs up to 0.8), not float32
  # under another name and not a lost bit of the pipeline.
  error = jnp.abs(out32 - out16.astype(jnp.float32))
  assert 1e-4 < float(jnp.max(error)) < 0.04 and float(jnp.mean(error)) < 0.006
  task_vars = jax.jit(fp32.task_net.init)(jax.random.key(0), images)
  seg32, depth32 = fp32.task_net.apply(task_vars, images)
  seg16, depth16 = bf16.task_net.apply(task_vars, images)
  assert seg16.dtype == depth16.dtype == jnp.float32  # Outputs feed softmax and losses.
  for ours, theirs in ((seg16, seg32), (depth16, depth32)):
    relative = float(jnp.max(jnp.abs(ours - theirs)) / jnp.max(jnp.abs(theirs)))
    assert 1e-4 < relative < 0.02, relative  # measured: 0.008 (seg), 0.005 (depth)
  jaxpr = str(jax.make_jaxpr(bf16.task_net.apply)(task_vars, images))
  assert "bf16[1,40,56,4]" in jaxpr  # conv1_1's activations (width 1/16: 4 channels)


def test_bf16_params(tiny_model_config):
  tiny_model_config.dtype = tiny_model_config.param_dtype = "bfloat16"
  d_img = models.build_models(tiny_model_config, FINAL).d_img
  images = jax.random.uniform(jax.random.key(1), (1, 32, 32, 3), minval=-1, maxval=1)
  variables, logits = _init_and_apply(d_img, images)
  assert all(p.dtype == jnp.bfloat16 for p in jax.tree.leaves(variables))
  assert logits.dtype == jnp.float32
  # The same weights in a float32 network: the same function, up to bf16's rounding.
  tiny_model_config.dtype = tiny_model_config.param_dtype = "float32"
  fp32 = models.build_models(tiny_model_config, FINAL).d_img
  want = fp32.apply(jax.tree.map(lambda p: p.astype(jnp.float32), variables), images)
  relative = float(jnp.max(jnp.abs(logits - want)) / jnp.max(jnp.abs(want)))
  assert relative < 0.01, relative  # measured: 0.003


def test_adaptsegnet_two_branch_aspp_ignores_the_last_two_branches():
  x = jax.random.normal(jax.random.key(0), (1, 30, 30, 8))
  two = ASPP(5, summed_branches=2)
  variables = two.init(jax.random.key(1), x)
  params = variables["params"]
  assert set(params) == {"branch_0", "branch_1", "branch_2", "branch_3"}
  changed = jax.tree_util.tree_map_with_path(
      lambda path, p: p + 1.0 if "branch_3" in jax.tree_util.keystr(path) else p, params)
  np.testing.assert_array_equal(two.apply({"params": params}, x),
                                two.apply({"params": changed}, x))
  four = ASPP(5, summed_branches=4)
  assert not np.allclose(four.apply({"params": params}, x), four.apply({"params": changed}, x))
  with pytest.raises(ValueError, match="aspp_summed_branches"):
    ASPP(5, summed_branches=5).init(jax.random.key(1), x)


def _prints_ok(code: str) -> None:
  """Run `code` in a fresh interpreter; it must exit 0 having printed only 'ok'."""
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip() == "ok"


def test_package_imports_without_torch_or_tensorflow():
  """torch is only for torch_ref/parity; nothing in the package may need it (or TF) to import."""
  _prints_ok(
      "import sys\n"
      "sys.modules['torch'] = None\n"  # any `import torch` now raises ImportError
      "sys.modules['tensorflow'] = None\n"
      "import gio_ada_jax, gio_ada_jax.models, gio_ada_jax.interop.convert\n"
      "import gio_ada_jax.interop.parity\n"
      "try:\n"
      "  import gio_ada_jax.interop.torch_ref\n"
      "except ImportError as e:\n"
      "  assert 'pip install torch' in str(e), e\n"
      "else:\n"
      "  raise SystemExit('torch_ref imported without torch')\n"
      "print('ok')\n")


def test_training_evaluation_and_the_demo_import_without_torch():
  """Only the PyTorch interop needs torch: training, evaluation, the CycleGAN stage and the
  demo must import (and so run) where torch is not installed."""
  _prints_ok("import sys\n"
             "sys.modules['torch'] = None\n"
             "import gio_ada_jax.trainer, gio_ada_jax.eval.evaluate, gio_ada_jax.demo\n"
             "import gio_ada_jax.cyclegan.stage, gio_ada_jax.cyclegan.translate\n"
             "print('ok')\n")


@pytest.mark.parametrize("variant,d_out_kind,size,message", [
    ("na,na", "patch", (7, 48), r"7x48: the task net \(output stride 8\) needs at least 8"),
    ("na,ss", "patch", (23, 48), r"23x48: D_out \(model.d_out.kind='patch', n_layers=3\) needs "
                                 "at least 24"),
    ("na,ss", "fc", (48, 31), r"48x31: D_out \(model.d_out.kind='fc'\) needs at least 32"),
    ("gd,na", "patch", (1, 48), r"1x48: D_img \(model.d_img.n_layers=3\) needs at least 24"),
    ("cg,na", "patch", (32, 23), r"32x23: the CycleGAN's discriminators \(cyclegan.n_layers=3\) "
                                 "needs at least 24"),
    ("na,na", "patch", (8, 8), None), ("+sd,joint", "patch", (24, 24), None),
    ("na,ss", "fc", (32, 32), None),
])
def test_an_image_size_a_network_cannot_take_is_refused_naming_the_fields(
    tiny_model_config, variant, d_out_kind, size, message):
  tiny_model_config.d_out.kind = d_out_kind
  check = lambda: models.check_input_size(  # noqa: E731
      tiny_model_config, variants.parse(variant), *size, cyclegan_n_layers=3)
  if message is None:
    check()
    return
  with pytest.raises(ConfigError, match=message + ".*Raise --config.data.height"):
    check()


def test_the_smallest_sizes_are_the_networks_own():
  """Each stated smallest side gives one logit, and one pixel less gives none (a mean over an
  empty map would be NaN, not an error, without the networks' own check)."""
  from gio_ada_jax.models import discriminators  # pylint: disable=g-import-not-at-top
  for module, smallest in [(models.FCDiscriminator(ndf=2), discriminators.FC_SMALLEST_INPUT),
                           (models.PatchDiscriminator(ndf=2, n_layers=2),
                            discriminators.patch_smallest_input(2))]:
    params = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, smallest, 40, 3)))
    logits = jax.eval_shape(module.apply, params, jnp.zeros((1, smallest, 40, 3)))
    assert logits.shape[1] == 1
    with pytest.raises(ValueError, match=f"is too small: it leaves no logit; use at least "
                                         f"{smallest} pixels per side"):
      jax.eval_shape(module.apply, params, jnp.zeros((1, smallest - 1, 40, 3)))
