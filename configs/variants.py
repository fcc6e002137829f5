"""The paper's ablations as config edits: one place that sets every field a variant touches."""

from gio_ada_jax.state import INPUT_LEVELS, OUTPUT_LEVELS, generator_conditioning


def apply_variant(config, variant: str | None):
  """Apply "INPUT,OUTPUT" (e.g. "+sd,joint", "na,na", "gd,ss") to `config` and return it.

  INPUT is Table 2's input level (na, cg, gd, +d, +s, +sd), OUTPUT Table 3's output level
  (na, ss, depth, sep, joint). G_img's inputs follow the input level.
  """
  if not variant:
    return config
  parts = variant.split(",")
  if len(parts) != 2 or parts[0] not in INPUT_LEVELS or parts[1] not in OUTPUT_LEVELS:
    raise ValueError(f"config variant {variant!r} must be 'INPUT,OUTPUT' with INPUT in "
                     f"{INPUT_LEVELS} and OUTPUT in {OUTPUT_LEVELS}, e.g. '+sd,joint'.")
  config.train.input_level, config.train.output_level = parts
  conditioning = generator_conditioning(parts[0])
  if conditioning is not None:
    config.model.generator.use_labels, config.model.generator.use_depth = conditioning
  return config
