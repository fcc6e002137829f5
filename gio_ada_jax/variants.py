"""The paper's ablations as one typed value: Table 2's input level and Table 3's output level.

A config names its variant once, `config.variant = "INPUT,OUTPUT"` (e.g. "+sd,joint", the
paper's final model); everything the variant decides (whether G_img and D_img exist, G_img's
inputs, whether a CycleGAN is trained first, the output discriminators and their inputs) is read
from the two tables below, never from the spelling of the names. No JAX here: the PyTorch
reference (torch_ref/step.py) and the config files use it too.
"""

import dataclasses
from typing import NamedTuple

from gio_ada_jax.errors import ConfigError

# The four networks of a GIO-Ada step, in this order everywhere (state, optimisers, parity).
NETWORKS = ("generator", "task_net", "d_img", "d_out")


class InputLevel(NamedTuple):
  """What one input level of Table 2 trains."""

  has_generator: bool  # G_img (and D_img) train with the task net
  uses_labels: bool  # G_img's input includes the one-hot source labels (C channels)
  uses_depth: bool  # G_img's input includes the source depth (1 channel)
  trains_cyclegan: bool  # a CycleGAN translates the source set before the task net trains


# Paper Table 2 (section 4.2): "na" no input-level adaptation; "cg" a separately trained
# CycleGAN; "gd" the image transform network guided by the task network, "with none as
# additional input" (the image only); "+d", "+s", "+sd" add depth, labels, or both.
INPUT_TABLE = {
    "na": InputLevel(has_generator=False, uses_labels=False, uses_depth=False,
                     trains_cyclegan=False),
    "cg": InputLevel(has_generator=False, uses_labels=False, uses_depth=False,
                     trains_cyclegan=True),
    "gd": InputLevel(has_generator=True, uses_labels=False, uses_depth=False,
                     trains_cyclegan=False),
    "+d": InputLevel(has_generator=True, uses_labels=False, uses_depth=True,
                     trains_cyclegan=False),
    "+s": InputLevel(has_generator=True, uses_labels=True, uses_depth=False,
                     trains_cyclegan=False),
    "+sd": InputLevel(has_generator=True, uses_labels=True, uses_depth=True,
                      trains_cyclegan=False),
}

# Paper Table 3: each output discriminator's name and what it sees, in channel order ("seg":
# the softmax of the segmentation, C channels; "depth": the predicted depth, 1 channel). "sep"
# has one discriminator each, "joint" one on their concatenation.
OUTPUT_TABLE = {
    "na": {},
    "ss": {"main": ("seg",)},
    "depth": {"main": ("depth",)},
    "sep": {"seg": ("seg",), "depth": ("depth",)},
    "joint": {"main": ("seg", "depth")},
}

INPUT_LEVELS = tuple(INPUT_TABLE)  # ("na", "cg", "gd", "+d", "+s", "+sd")
OUTPUT_LEVELS = tuple(OUTPUT_TABLE)  # ("na", "ss", "depth", "sep", "joint")
EXAMPLE = "config.variant = '+sd,joint'"


@dataclasses.dataclass(frozen=True)
class Variant:
  """One ablation of the paper: an input level (Table 2) and an output level (Table 3).

  Frozen and hashable, so jitted functions take it as a static argument.
  """

  input_level: str
  output_level: str

  def __post_init__(self):
    for kind, value, allowed, table in (("input", self.input_level, INPUT_LEVELS, 2),
                                        ("output", self.output_level, OUTPUT_LEVELS, 3)):
      if value not in allowed:
        raise ConfigError(f"config.variant: {kind} level {value!r} is not known; choose one of "
                          f"{allowed} (paper Table {table}), e.g. {EXAMPLE}.")

  def __str__(self) -> str:
    return f"{self.input_level},{self.output_level}"

  @property
  def _input(self) -> InputLevel:
    return INPUT_TABLE[self.input_level]

  @property
  def has_generator(self) -> bool:
    """Whether G_img and D_img exist (gd, +d, +s, +sd)."""
    return self._input.has_generator

  @property
  def uses_labels(self) -> bool:
    """Whether G_img takes the one-hot source labels (+s, +sd)."""
    return self._input.uses_labels

  @property
  def uses_depth(self) -> bool:
    """Whether G_img takes the source depth (+d, +sd)."""
    return self._input.uses_depth

  @property
  def trains_cyclegan(self) -> bool:
    """Whether a CycleGAN is trained first and translates the source set (cg)."""
    return self._input.trains_cyclegan

  @property
  def d_out_inputs(self) -> dict[str, tuple[str, ...]]:
    """Each output discriminator's name -> what it sees ("seg", "depth"), in channel order."""
    return dict(OUTPUT_TABLE[self.output_level])

  def d_out_channels(self, num_classes: int) -> dict[str, int]:
    """Each output discriminator's name -> its input channels ({} for output level "na")."""
    channels = {"seg": num_classes, "depth": 1}
    return {name: sum(channels[part] for part in parts)
            for name, parts in self.d_out_inputs.items()}


FINAL = Variant("+sd", "joint")  # the paper's final model (GIO-Ada, Table 1)


def parse(text: str) -> Variant:
  """The Variant of "INPUT,OUTPUT" (e.g. "+sd,joint", "na,na", "gd,ss")."""
  parts = text.split(",") if isinstance(text, str) else []
  if len(parts) != 2:
    raise ConfigError(f"config.variant={text!r} must be 'INPUT,OUTPUT' with INPUT in "
                      f"{INPUT_LEVELS} (paper Table 2) and OUTPUT in {OUTPUT_LEVELS} (Table 3), "
                      f"e.g. {EXAMPLE}.")
  return Variant(*(part.strip() for part in parts))


def apply_variant(config, variant: str | None):
  """Set config.variant to "INPUT,OUTPUT" (e.g. "+sd,joint", "na,na", "gd,ss") and return
  `config`; None or "" keeps the config's own. Config files call it with the text after the
  colon of `--config FILE.py:INPUT,OUTPUT`.

  INPUT is Table 2's input level (na, cg, gd, +d, +s, +sd), OUTPUT Table 3's output level
  (na, ss, depth, sep, joint). An unknown one is an error naming the allowed values.
  """
  if not variant:
    return config
  config.variant = str(parse(variant))
  return config


def from_config(config) -> Variant:
  """The Variant of `config.variant`."""
  return parse(config.variant)
