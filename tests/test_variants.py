"""The variant: the paper's Tables 2 and 3 as one value."""

import subprocess
import sys

import pytest

from gio_ada_jax import variants

C = 10  # configs/test.py's classes

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
    assert variant.generator_input_channels(C) == PAPER_G_IMG_CHANNELS[input_level]
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
  """torch_ref uses it: it must not need JAX."""
  code = ("import sys\n"
          "sys.modules['jax'] = sys.modules['flax'] = None\n"  # `import jax` now raises
          "import gio_ada_jax.variants\n"
          "print(gio_ada_jax.variants.parse('gd,joint'))\n")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "gd,joint"
