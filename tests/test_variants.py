"""The variant: the paper's Tables 2 and 3 as one value, its config field and what it builds."""

import functools
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import test as test_config
from gio_ada_jax import models, trainer, variants
from gio_ada_jax.train import state, step as train_step

C = 10  # configs/test.py's classes
HEIGHT, WIDTH = 32, 48

# Typed out from the paper (section 4.2, Tables 2 and 3), not computed from the module.
# Input level: (G_img and D_img train, G_img takes labels, G_img takes depth, CycleGAN first).
# "gd" is "the image transform network guided by the task network", "with none as additional
# input"; "cg" trains a CycleGAN separately and then the task net as in "na".
PAPER_INPUT = {
    "na": (False, False, False, False),
    "cg": (False, False, False, True),
    "gd": (True, False, False, False),
    "+d": (True, False, True, False),
    "+s": (True, True, False, False),
    "+sd": (True, True, True, False),
}
PAPER_G_IMG_CHANNELS = {"gd": 3, "+d": 4, "+s": 3 + C, "+sd": 4 + C}  # RGB, one-hot, depth
# Output level: each output discriminator and its input channels (softmax C, depth 1).
PAPER_OUTPUT = {
    "na": {},
    "ss": {"main": C},
    "depth": {"main": 1},
    "sep": {"seg": C, "depth": 1},
    "joint": {"main": C + 1},
}


# --------------------------------------------------------------------------- the table


def test_levels_are_the_papers():
  assert variants.INPUT_LEVELS == ("na", "cg", "gd", "+d", "+s", "+sd")
  assert variants.OUTPUT_LEVELS == ("na", "ss", "depth", "sep", "joint")


@pytest.mark.parametrize("input_level", list(PAPER_INPUT))
@pytest.mark.parametrize("output_level", list(PAPER_OUTPUT))
def test_every_variant_matches_the_paper(input_level, output_level):
  variant = variants.parse(f"{input_level},{output_level}")
  assert variant == variants.Variant(input_level, output_level)
  assert str(variant) == f"{input_level},{output_level}"
  assert (variant.has_generator, variant.uses_labels, variant.uses_depth,
          variant.trains_cyclegan) == PAPER_INPUT[input_level]
  if variant.has_generator:
    # G_img's input: RGB, then the one-hot labels, then the depth.
    channels = 3 + (C if variant.uses_labels else 0) + (1 if variant.uses_depth else 0)
    assert channels == PAPER_G_IMG_CHANNELS[input_level]
  assert variant.d_out_channels(C) == PAPER_OUTPUT[output_level]
  assert list(variant.d_out_channels(C)) == list(PAPER_OUTPUT[output_level])  # key order


def test_variant_is_a_frozen_hashable_value():
  variant = variants.parse("+sd,joint")
  assert variant == variants.FINAL and hash(variant) == hash(variants.Variant("+sd", "joint"))
  assert len({variant, variants.parse("+sd,joint"), variants.parse("gd,joint")}) == 2
  with pytest.raises(AttributeError):
    variant.input_level = "gd"
  assert str(variants.parse(" gd , ss ")) == "gd,ss"


@pytest.mark.parametrize("text,names", [
    ("+sd", ["config.variant='+sd'", "INPUT,OUTPUT", "'na', 'cg', 'gd'", "'joint'"]),
    ("+sd,joint,ss", ["'+sd,joint,ss'", "INPUT,OUTPUT"]),
    ("sd,joint", ["config.variant", "input level 'sd'", "'+d', '+s', '+sd'", "Table 2"]),
    ("+sd,both", ["config.variant", "output level 'both'", "'sep', 'joint'", "Table 3"]),
    ("cyclegan,na", ["input level 'cyclegan'", "e.g. config.variant = '+sd,joint'"]),
])
def test_parse_errors_name_the_field_the_value_and_the_choices(text, names):
  with pytest.raises(ValueError) as error:
    variants.parse(text)
  for name in names:
    assert name in str(error.value), (name, str(error.value))


def test_module_imports_without_jax():
  """torch_ref and configs/ use it: it must not need JAX."""
  code = ("import sys\n"
          "sys.modules['jax'] = sys.modules['flax'] = None\n"  # `import jax` now raises
          "import gio_ada_jax.variants, configs.variants\n"
          "print(gio_ada_jax.variants.parse('gd,joint'))\n")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "gd,joint"


# ------------------------------------------------------------------- the config field


def test_config_holds_the_variant_once():
  config = test_config.get_config("gd,ss")
  assert config.variant == "gd,ss"
  assert variants.from_config(config) == variants.Variant("gd", "ss")


def test_the_variant_fields_of_an_earlier_version_are_refused_together():
  """An earlier version held the variant in four fields; a config file that still sets them is
  refused (ConfigDict accepts new fields, and nothing would read them), naming all four and
  where the variant is set now, by the trainer before anything runs."""
  config = test_config.get_config()
  config.train.input_level, config.train.output_level = "gd", "ss"
  config.model.generator.use_labels = config.model.generator.use_depth = False
  with pytest.raises(ValueError, match=r"config\.model\.generator\.use_depth, "
                     r"config\.model\.generator\.use_labels, config\.train\.input_level, "
                     r"config\.train\.output_level, which this version does not have.*"
                     r"the variant is config\.variant = 'INPUT,OUTPUT'"):
    trainer.train_and_evaluate(config, "/nonexistent/workdir")


# --------------------------------------------------------------- what the variant builds


def _param_shapes(text: str):
  variant = variants.parse(text)
  built = models.build_models(test_config.get_config(text).model, variant)
  init = functools.partial(state.init_params, built, variant, C, height=HEIGHT, width=WIDTH)
  return jax.eval_shape(init, jax.random.key(0))


@pytest.mark.parametrize("input_level", list(PAPER_G_IMG_CHANNELS))
def test_g_img_input_channels(input_level):
  shapes = _param_shapes(f"{input_level},na")
  assert shapes["generator"]["stem"]["kernel"].shape[2] == PAPER_G_IMG_CHANNELS[input_level]
  assert shapes["d_img"]["conv_0"]["kernel"].shape[2] == 3


@pytest.mark.parametrize("input_level", ["na", "cg"])
def test_no_g_img_nor_d_img_without_a_transform_net(input_level):
  shapes = _param_shapes(f"{input_level},joint")
  assert shapes["generator"] == {} and shapes["d_img"] == {}
  assert shapes["task_net"] and shapes["d_out"]


@pytest.mark.parametrize("output_level", list(PAPER_OUTPUT))
def test_d_out_input_channels(output_level):
  shapes = _param_shapes(f"na,{output_level}")
  assert {name: tree["conv_0"]["kernel"].shape[2] for name, tree in shapes["d_out"].items()
          } == PAPER_OUTPUT[output_level]


@pytest.mark.parametrize("input_level,label_changes,depth_changes", [
    ("gd", False, False), ("+d", False, True), ("+s", True, False), ("+sd", True, True)])
def test_g_img_sees_exactly_its_variants_inputs(input_level, label_changes, depth_changes):
  """gd's translation ignores the source labels and depth; +d, +s and +sd's do not."""
  variant = variants.Variant(input_level, "na")
  built = models.build_models(test_config.get_config(str(variant)).model, variant)
  params = jax.jit(functools.partial(state.init_params, built, variant, C, height=HEIGHT,
                                     width=WIDTH))(jax.random.key(0))
  rng = np.random.default_rng(0)
  batch = {"source_image": rng.uniform(-1, 1, (1, HEIGHT, WIDTH, 3)).astype(np.float32),
           "source_label": rng.integers(0, C, (1, HEIGHT, WIDTH)).astype(np.int32),
           "source_depth": rng.uniform(0, 1, (1, HEIGHT, WIDTH, 1)).astype(np.float32)}
  other_labels = {**batch, "source_label": (batch["source_label"] + 1) % C}
  other_depth = {**batch, "source_depth": 1.0 - batch["source_depth"]}
  translate = jax.jit(train_step.translated_source, static_argnums=(0, 3))
  base = np.asarray(translate(built, params, batch, variant))
  assert (not np.array_equal(base, translate(built, params, other_labels, variant))
          ) == label_changes
  assert (not np.array_equal(base, translate(built, params, other_depth, variant))
          ) == depth_changes
